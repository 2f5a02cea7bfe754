"""LongBench's metrics, written here as pure functions (no rouge / fuzzywuzzy / jieba needed).

They follow the upstream definitions (THUDM/LongBench metrics.py / eval.py) and give the same values on
English tasks: QA F1 over SQuAD-normalised words; ROUGE-L F as the `rouge` package (1.0.1) computes it
(case-sensitive, the text split into sentences at ".", words split at single spaces, each side's words
counted once, the union of the per-sentence LCS words over the reference's sentences, F with a 1e-8 in
the denominator, 0 when a side has no sentence); classification (including upstream's quirk of removing
items from the match list while iterating over it); retrieval and count accuracy; code edit similarity
of the first code line as fuzzywuzzy's `fuzz.ratio` computes it without python-Levenshtein (difflib's
ratio, rounded to whole percent). One difference, on purpose:
- Chinese tasks (multifieldqa_zh, dureader, vcsum, passage_retrieval_zh excepted) are split into single
  CJK characters and runs of Latin letters/digits, where upstream uses jieba's words: their scores can
  differ from published Chinese numbers; English tasks are unaffected.
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
    """Plain ROUGE-L F1 of two token sequences: LCS-based precision and recall (no sentence split)."""
    lcs = lcs_length(prediction_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(prediction_tokens), lcs / len(reference_tokens)
    return 2 * p * r / (p + r)


def _sentences(text: str) -> list[str]:
    """The `rouge` package's split: at every ".", whitespace runs collapsed, empty pieces dropped (a
    piece of spaces only is kept, as an empty sentence)."""
    return [" ".join(piece.split()) for piece in text.split(".") if len(piece) > 0]


def _words(sentences: Sequence[str]) -> list[str]:
    return [w for s in sentences for w in s.split(" ")]


def _lcs_words(ref: Sequence[str], hyp: Sequence[str]) -> set[str]:
    """The words of one longest common subsequence, reconstructed as the `rouge` package does (from the
    end: a match is taken, else the longer of up/left, left on a tie)."""
    n, m = len(ref), len(hyp)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, prev, x = table[i], table[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if x == hyp[j - 1] else max(prev[j], row[j - 1])
    words: set[str] = set()
    i, j = n, m
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1]:
            words.add(ref[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words


def rouge_l_summary(prediction: str, reference: str) -> float:
    """Summary-level ROUGE-L F of the `rouge` package (what LongBench's rouge_score returns)."""
    hyp, ref = _sentences(prediction), _sentences(reference)
    if not hyp or not ref:
        return 0.0  # upstream: the package raises "Hypothesis is empty" and rouge_score returns 0
    n, m = len(set(_words(hyp))), len(set(_words(ref)))
    union: set[str] = set()
    for ref_sentence in ref:
        ref_words = ref_sentence.split(" ")
        for hyp_sentence in hyp:
            union |= _lcs_words(ref_words, hyp_sentence.split(" "))
    p, r = len(union) / n, len(union) / m
    return 2.0 * ((p * r) / (p + r + 1e-8))


def rouge_score(prediction: str, ground_truth: str, **_) -> float:
    return rouge_l_summary(prediction, ground_truth)


def rouge_zh_score(prediction: str, ground_truth: str, **_) -> float:
    # upstream: " ".join(jieba.cut(text)) into rouge_score; here characters / Latin runs instead of jieba words
    return rouge_l_summary(" ".join(re.findall(r"[A-Za-z0-9]+|\S", prediction)),
                           " ".join(re.findall(r"[A-Za-z0-9]+|\S", ground_truth)))


def classification_score(prediction: str, ground_truth: str, *, all_classes: Sequence[str] | None = None, **_) -> float:
    """1/k when the true class is among the k class names the prediction mentions, else 0. Names
    contained in the true class's own name are dropped first, as upstream drops them: by removing
    from the list it is iterating over, so a name right after a dropped one is kept."""
    matches = [c for c in (all_classes or []) if c in prediction]
    i = 0
    while i < len(matches):  # list iteration with removal, step for step
        term = matches[i]
        if term in ground_truth and term != ground_truth:
            matches.remove(term)
        i += 1
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
    return _id_score(prediction, str(ground_truth))


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
