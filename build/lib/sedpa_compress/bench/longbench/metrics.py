"""LongBench's metrics, written here as pure functions (no rouge / fuzzywuzzy / jieba needed).

They follow the upstream definitions (THUDM/LongBench metrics.py / eval.py): QA F1 over normalised
words, ROUGE-L F over words, classification and retrieval accuracy, passage count, and code edit
similarity of the first code line. Differences, on purpose:
- Chinese tasks are tokenised per character (upstream uses jieba words): scores differ slightly from
  published Chinese numbers; English tasks are unaffected.
- ROUGE-L is the plain LCS F1 over whitespace words of the lower-cased text; upstream's `rouge`
  package computes a summary-level union-LCS F with its own beta, so summary scores can differ by a
  point or so.
- code similarity is difflib's ratio (what fuzzywuzzy's `fuzz.ratio` computes without
  python-Levenshtein), rounded to whole percent as fuzz.ratio does.
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_ZH_PUNCT = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
_EN_PUNCT = set(string.punctuation)
_ALL_PUNCT = set(string.punctuation + _ZH_PUNCT)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _EN_PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def normalize_zh_answer(s: str) -> str:
    """Lower case, no Chinese or English punctuation, no whitespace."""
    return "".join(ch for ch in "".join(s.lower().split()) if ch not in _ALL_PUNCT)


def f1_tokens(prediction: Sequence[str], ground_truth: Sequence[str]) -> float:
    common = Counter(prediction) & Counter(ground_truth)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction)
    recall = same / len(ground_truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_) -> float:
    return f1_tokens(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _zh_tokens(text: str) -> list[str]:
    # per character for CJK, whole words for runs of Latin letters/digits (jieba-free)
    return [t for t in (normalize_zh_answer(tok) for tok in re.findall(r"[A-Za-z0-9]+|\S", text)) if t]


def qa_f1_zh_score(prediction: str, ground_truth: str, **_) -> float:
    return f1_tokens(_zh_tokens(prediction), _zh_tokens(ground_truth))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction_tokens: Sequence[str], reference_tokens: Sequence[str]) -> float:
    """ROUGE-L F1: LCS-based precision and recall."""
    lcs = lcs_length(prediction_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(prediction_tokens), lcs / len(reference_tokens)
    return 2 * p * r / (p + r)


def rouge_score(prediction: str, ground_truth: str, **_) -> float:
    return rouge_l(prediction.lower().split(), ground_truth.lower().split())


def rouge_zh_score(prediction: str, ground_truth: str, **_) -> float:
    return rouge_l(_zh_tokens(prediction), _zh_tokens(ground_truth))


def classification_score(prediction: str, ground_truth: str, *, all_classes: Sequence[str] | None = None, **_) -> float:
    """1/k when the true class is among the k class names the prediction mentions (names contained in
    the true class's own name do not count against it), else 0 (upstream behaviour)."""
    matches = [c for c in (all_classes or []) if c in prediction]
    matches = [m for m in matches if not (m in ground_truth and m != ground_truth)]
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def _id_score(prediction: str, truth_id: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == truth_id for n in numbers) / len(numbers) if numbers else 0.0


def retrieval_score(prediction: str, ground_truth: str, **_) -> float:
    """The share of numbers in the prediction that are the true paragraph number ("Paragraph 7")."""
    m = re.findall(r"Paragraph (\d+)", ground_truth)
    return _id_score(prediction, m[0]) if m else 0.0


def retrieval_zh_score(prediction: str, ground_truth: str, **_) -> float:
    m = re.findall(r"段落(\d+)", ground_truth)
    return _id_score(prediction, m[0]) if m else 0.0


def count_score(prediction: str, ground_truth: str, **_) -> float:
    """The share of numbers in the prediction equal to the true count."""
    return _id_score(prediction, str(ground_truth).strip())


def first_code_line(prediction: str) -> str:
    """The first line that is not a comment or a markdown fence (what the model means as code)."""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def edit_similarity(a: str, b: str) -> float:
    """difflib's similarity ratio in whole percent, as a fraction (fuzzywuzzy's fuzz.ratio / 100)."""
    if not a and not b:
        return 1.0
    return round(100 * difflib.SequenceMatcher(None, a, b).ratio()) / 100


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    return edit_similarity(first_code_line(prediction), ground_truth)


METRICS: dict[str, Callable[..., float]] = {
    "qa_f1": qa_f1_score,
    "qa_f1_zh": qa_f1_zh_score,
    "rouge": rouge_score,
    "rouge_zh": rouge_zh_score,
    "classification": classification_score,
    "retrieval": retrieval_score,
    "retrieval_zh": retrieval_zh_score,
    "count": count_score,
    "code_sim": code_sim_score,
}


def score_prediction(metric: str, prediction: str, answers: Sequence[str], *, all_classes: Sequence[str] | None = None,
                     first_line: bool = False) -> float:
    """Best score over the reference answers (upstream's scorer); `first_line` keeps only the first
    line of the prediction (trec, triviaqa, samsum, lsht)."""
    if first_line:
        prediction = prediction.lstrip("\n").split("\n")[0]
    fn = METRICS[metric]
    return max((fn(prediction, str(a), all_classes=all_classes) for a in answers), default=0.0)
