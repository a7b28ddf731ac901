"""Build bench/qa/qa-dev.json, the development QA set (SQuAD v2.0 format), from the repo's
samples and 30 SciFact abstracts: hand-written questions, each with gold answer strings that
occur in its supporting text (checked here), and off-topic questions whose right answer is
"nothing found" (`is_impossible`, no answers). See bench/qa/README.md.

    .venv/bin/python bench/qa/make_qa_dev.py [--scifact /work/shared/data/scifact]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ingest.loaders import load_html, load_text
from pipelines.evaluation import contains_answer

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "qa-dev.json"

# (question, gold answer strings) per sample file.
SAMPLES: dict[str, list[tuple[str, list[str]]]] = {
    "coffee-brewing.txt": [
        ("How many grams of ground coffee per litre of water for filter coffee?", ["60 grams"]),
        ("What water temperature extracts the best coffee flavour?", ["90 and 96 degrees"]),
        ("What grind size suits a French press?", ["coarse"]),
        ("How long does a French press steep?", ["four minutes"]),
        ("How much pressure is espresso brewed under?", ["nine bars"]),
        ("What does water that is too cool do to coffee?", ["sour", "under-extracted"]),
        ("How fast does ground coffee lose its aroma?", ["within half an hour", "half an hour"]),
    ],
    "ragserve-guide.md": [
        ("Which command starts ragserve on a fresh machine?", ["make run"]),
        ("On which port does the ragserve service start?", ["8000"]),
        ("What prefix do ragserve settings use?", ["RAG_"]),
        ("Which ragserve option removes documents whose files were deleted?", ["--prune"]),
        ("Where is the OpenAPI documentation of ragserve served?", ["/docs"]),
    ],
    "solar-system.html": [
        ("How hot is the surface of Venus?", ["464 degrees"]),
        ("What is the tallest volcano in the Solar System?", ["Olympus Mons"]),
        ("How old is the Solar System?", ["4.6 billion years"]),
        ("What share of the Solar System's mass does the Sun hold?", ["99.86 percent"]),
        ("What are Saturn's rings made of?", ["water ice"]),
    ],
}

# SciFact corpus id -> (question, gold answer strings) about its abstract.
SCIFACT: dict[str, list[tuple[str, list[str]]]] = {
    "15830352": [
        (
            "Which organisms were used to test whether resonating circadian clocks "
            "enhance fitness?",
            ["cyanobacteria"],
        )
    ],
    "21372171": [
        (
            "How many patients with peripheral artery disease were studied for plasma HMGB1?",
            ["24 patients"],
        )
    ],
    "52176296": [
        (
            "How many patients with clinically isolated syndrome were analyzed for the "
            "2017 McDonald criteria?",
            ["137 patients"],
        ),
        (
            "What share of patients got an MS diagnosis under the 2017 McDonald revisions?",
            ["82.5%"],
        ),
    ],
    "1922901": [
        ("Which networks generate force in tissue morphogenesis?", ["actin-myosin networks"])
    ],
    "32720933": [
        ("How many cellular microRNAs were cloned in the HPV31 study?", ["over 500", "500"])
    ],
    "3623127": [
        ("After what age do improvements in human survival tend to decline?", ["age 100", "100"]),
        ("Since when has the age at death of the world's oldest person not increased?", ["1990s"]),
    ],
    "19485243": [
        (
            "Which transcription factors first bind the albumin gene enhancer in liver "
            "precursor cells?",
            ["HNF3", "GATA-4"],
        )
    ],
    "37549932": [
        ("Which antiapoptotic protein is required to maintain the model leukemia?", ["BCL-2"])
    ],
    "2147704": [
        (
            "Where is the goosecoid gene expressed in the Xenopus gastrula?",
            ["dorsal blastopore lip"],
        )
    ],
    "29459383": [
        ("Which aminopeptidase trims antigenic peptides in the endoplasmic reticulum?", ["ERAAP"])
    ],
    "9451684": [
        (
            "How much of the yeast genome is expressed periodically during metabolic cycles?",
            ["over half"],
        )
    ],
    "1616661": [
        (
            "Which two Wnt ligands are produced by the neuroepithelium of the developing CNS?",
            ["Wnt7a", "Wnt7b"],
        )
    ],
    "3346812": [("When was the silencing function of 5-methylcytosine first proposed?", ["1970s"])],
    "23326722": [
        (
            "How many Afro-Caribbean patients with adult T-cell leukaemia lymphoma were "
            "described in Barbados?",
            ["23"],
        ),
        ("What was the median age of the ATLL patients in Barbados?", ["38 years"]),
    ],
    "22444939": [
        (
            "How many residues at most may the loop segments modeled by ModLoop contain?",
            ["20 residues"],
        ),
        ("Which modeling program does the ModLoop server rely on?", ["MODELLER"]),
    ],
    "2619579": [("How long are microRNAs, in nucleotides?", ["21 nucleotides"])],
    "10765888": [
        (
            "Which immune cells help maintain hippocampal neurogenesis in adults?",
            ["T lymphocytes", "microglia", "T cells"],
        )
    ],
    "2158500": [
        ("For how many days was leptin given to the ob/ob mice?", ["5 days"]),
        (
            "By how much was the body weight of ob/ob mice reduced after leptin treatment?",
            ["13.2%"],
        ),
    ],
    "35764259": [
        (
            "Which receptor chain, together with IL-10Rβ, forms the receptor of IL-28 and IL-29?",
            ["IL-28Rα"],
        )
    ],
    "43602749": [
        ("Which nucleolar factor is the interaction partner of NBS1?", ["Treacle", "TCOF1"])
    ],
    "42865134": [
        ("The SANT domain is homologous to the DNA binding domain of which protein?", ["c-myb"])
    ],
    "37205685": [
        (
            "In how many countries has chloroquine-resistant malaria been confirmed?",
            ["more than 40", "40 countries"],
        ),
        ("When was chloroquine introduced?", ["1934"]),
    ],
    "3506723": [
        (
            "Which actin regulatory complex has an established role in the turnover of "
            "junctional actin?",
            ["Arp2/3"],
        )
    ],
}

# Questions nothing in the corpus answers: the right behaviour is "nothing found", no sources.
OFF_TOPIC = [
    "Who won the 1998 FIFA World Cup?",
    "What is the capital city of Australia?",
    "How do I change a flat bicycle tyre?",
    "What is the best recipe for a chocolate cake?",
    "Which actor played the lead role in the film Titanic?",
    "How many strings does a standard violin have?",
    "What is the exchange rate between the euro and the yen today?",
    "Who wrote the novel Pride and Prejudice?",
]


def _sample_text(path: Path) -> tuple[str, str]:
    loader = load_html if path.suffix == ".html" else load_text
    doc = next(iter(loader(path)))
    return doc.title or path.stem, doc.text


def _scifact(root: Path) -> dict[str, tuple[str, str]]:
    wanted: dict[str, tuple[str, str]] = {}
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if str(row["_id"]) in SCIFACT:
                wanted[str(row["_id"])] = (str(row["title"]), str(row["text"]))
    return wanted


def _span(context: str, gold: str) -> dict[str, object]:
    """The gold answer as SQuAD keeps it: the context's own characters (a line break may
    stand where the question's author wrote a space) and where they start."""
    pattern = r"\s+".join(re.escape(word) for word in gold.split())
    match = re.search(pattern, context, flags=re.IGNORECASE)
    if match is None:
        raise SystemExit(f"gold answer {gold!r} is not in its text")
    return {"text": match.group(0), "answer_start": match.start()}


def _article(
    title: str, doc_id: str, source: str, context: str, qas: list[tuple[str, list[str]]]
) -> dict[str, object]:
    questions = []
    for i, (question, answers) in enumerate(qas):
        for gold in answers:
            if not contains_answer(context, [gold]):
                raise SystemExit(f"{doc_id}: gold answer {gold!r} is not in its text")
        spans = [_span(context, a) for a in answers]
        questions.append(
            {"id": f"{doc_id}-{i}", "question": question, "answers": spans, "is_impossible": False}
        )
    return {
        "title": title,
        "doc_id": doc_id,
        "source": source,
        "paragraphs": [{"context": context, "qas": questions}],
    }


def build(scifact_root: Path) -> dict[str, object]:
    data: list[dict[str, object]] = []
    for name, qas in SAMPLES.items():
        title, text = _sample_text(ROOT / "samples" / name)
        data.append(_article(title, name, f"samples/{name}", text, qas))
    abstracts = _scifact(scifact_root)
    missing = set(SCIFACT) - set(abstracts)
    if missing:
        raise SystemExit(f"SciFact ids not in the corpus: {sorted(missing)}")
    for doc_id, qas in SCIFACT.items():
        title, text = abstracts[doc_id]
        data.append(_article(title, f"scifact-{doc_id}", "SciFact corpus", text, qas))
    # SQuAD v2.0 keeps unanswerable questions inside a paragraph: the off-topic ones ride on
    # the first sample's, marked impossible and off-topic (they are off-topic for the corpus).
    first = data[0]["paragraphs"][0]  # type: ignore[index]
    first["qas"] += [
        {
            "id": f"off-topic-{i}",
            "question": q,
            "answers": [],
            "is_impossible": True,
            "off_topic": True,
        }
        for i, q in enumerate(OFF_TOPIC)
    ]
    return {"version": "v2.0", "name": "ragserve qa-dev", "data": data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scifact", type=Path, default=Path("/work/shared/data/scifact"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    built = build(args.scifact)
    args.out.write_text(json.dumps(built, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    answerable = sum(map(len, SAMPLES.values())) + sum(map(len, SCIFACT.values()))
    print(f"wrote {args.out}: {answerable} questions and {len(OFF_TOPIC)} off-topic ones")


if __name__ == "__main__":
    main()
