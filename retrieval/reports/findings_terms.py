"""The findings a report states: terms of a small radiology lexicon found in its affirmed words (negated mentions
were taken out when it was stored, so "No pneumothorax." states no pneumothorax)."""

from __future__ import annotations

import re

# finding -> the word sequences that name it (singular and plural; a longer term wins over a shorter one inside it)
LEXICON: dict[str, tuple[str, ...]] = {
    "pleural effusion": ("pleural effusion", "pleural effusions", "effusion", "effusions"),
    "pericardial effusion": ("pericardial effusion", "pericardial effusions"),
    "pneumothorax": ("pneumothorax", "pneumothoraces"),
    "consolidation": ("consolidation", "consolidations", "airspace disease"),
    "atelectasis": ("atelectasis", "atelectases", "atelectatic"),
    "pulmonary edema": ("pulmonary edema", "edema", "oedema", "pulmonary oedema"),
    "cardiomegaly": ("cardiomegaly", "enlarged heart", "enlarged cardiac silhouette"),
    "pneumonia": ("pneumonia", "pneumonias"),
    "nodule": ("nodule", "nodules", "pulmonary nodule", "pulmonary nodules"),
    "mass": ("mass", "masses"),
    "opacity": ("opacity", "opacities", "opacification"),
    "ground-glass opacity": ("ground glass", "ground-glass"),
    "emphysema": ("emphysema", "emphysematous"),
    "fibrosis": ("fibrosis", "fibrotic"),
    "interstitial disease": ("interstitial disease", "interstitial markings", "interstitial thickening"),
    "bronchiectasis": ("bronchiectasis",),
    "hilar enlargement": ("hilar enlargement", "hilar adenopathy"),
    "lymphadenopathy": ("lymphadenopathy", "adenopathy", "enlarged lymph nodes"),
    "fracture": ("fracture", "fractures", "fractured"),
    "dislocation": ("dislocation", "dislocated"),
    "hemorrhage": ("hemorrhage", "haemorrhage", "bleed", "hematoma", "haematoma"),
    "infarct": ("infarct", "infarcts", "infarction", "ischemia", "ischaemia"),
    "aneurysm": ("aneurysm", "aneurysms"),
    "embolism": ("embolism", "embolus", "emboli"),
    "stenosis": ("stenosis", "stenoses"),
    "calcification": ("calcification", "calcifications", "calcified"),
    "cyst": ("cyst", "cysts", "cystic"),
    "lesion": ("lesion", "lesions"),
    "metastasis": ("metastasis", "metastases", "metastatic"),
    "tumor": ("tumor", "tumour", "tumors", "tumours", "neoplasm", "malignancy", "carcinoma"),
    "abscess": ("abscess", "abscesses"),
    "ascites": ("ascites",),
    "hernia": ("hernia", "hernias"),
    "obstruction": ("obstruction", "obstructed"),
    "free air": ("free air", "pneumoperitoneum"),
    "hydronephrosis": ("hydronephrosis",),
    "degenerative change": ("degenerative change", "degenerative changes", "spondylosis", "osteoarthritis"),
    "scoliosis": ("scoliosis",),
    "osteopenia": ("osteopenia", "osteoporosis"),
    "midline shift": ("midline shift",),
    "hydrocephalus": ("hydrocephalus",),
    "thickening": ("thickening", "thickened"),
    "device": ("catheter", "pacemaker", "stent", "prosthesis", "endotracheal tube", "chest tube", "central line"),
}
_WORD = re.compile(r"[^\W_]+")
_BY_FIRST: dict[str, list[tuple[tuple[str, ...], str]]] = {}
for _finding, _names in LEXICON.items():
    for _name in _names:
        _words = tuple(_WORD.findall(_name.lower()))
        _BY_FIRST.setdefault(_words[0], []).append((_words, _finding))
for _options in _BY_FIRST.values():
    _options.sort(key=lambda option: -len(option[0]))  # the longest term first


def findings_in(affirmed: str) -> set[str]:
    """The lexicon's findings named in a report's affirmed words (each once, however often it is named)."""
    words = [w.lower() for w in _WORD.findall(affirmed)]
    found: set[str] = set()
    at = 0
    while at < len(words):
        step = 1
        for sequence, finding in _BY_FIRST.get(words[at], ()):
            if tuple(words[at : at + len(sequence)]) == sequence:
                found.add(finding)
                step = len(sequence)
                break
        at += step
    return found
