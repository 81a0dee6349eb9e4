"""The page's tags and probes in a real browser: tag chips, train a classifier from the marks, see its AUC, apply
it, filter by it.

Same set-up as tests/test_browser.py (Debian's Chromium through Playwright, `medsearch serve` on data/samples indexed
with the offline tiny model); its fixtures and helpers are reused, not copied.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Response

from tests.browser import open_page, save_shot, thumbs_loaded, wait_for_new_results

pytestmark = pytest.mark.peers  # starts Debian's Chromium (not in `make test-fast`)


def _cards(pg: Page) -> dict[int, dict[str, Any]]:
    """Each result card: its modality, tag chips and probe chips."""
    found: dict[int, dict[str, Any]] = {}
    for box in pg.query_selector_all(".card-box"):
        card = box.query_selector("[data-testid=result]")
        assert card is not None
        found[int(card.get_attribute("data-id") or 0)] = {
            "modality": (box.query_selector(".mod") or card).inner_text(),
            "tags": [c.get_attribute("data-tag") for c in box.query_selector_all("[data-testid=tag-chip]")],
            "probes": {
                c.get_attribute("data-probe"): float(c.get_attribute("data-p") or 0)
                for c in box.query_selector_all("[data-testid=probe-chip]")
            },
        }
    return found


@pytest.mark.timeout(300)
def test_page_tags_train_from_marks_apply_and_filter(server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    vocabulary = {"tags": [{"tag": "any", "prompt": "a medical image", "threshold": 0.0}]}
    assert httpx.post(server + "/v1/tags/apply", json=vocabulary, timeout=120).status_code == 200
    trained: list[dict[str, Any]] = []

    def watch(response: Response) -> None:
        if response.url.endswith("/v1/probes/train") and response.ok:
            trained.append(json.loads(response.text()))

    pg.on("response", watch)
    open_page(pg, server)
    assert pg.locator("[data-filter=tag]").count() == 1 and pg.locator("[data-filter=probe]").count() == 1
    assert pg.get_attribute("[data-filter=min_prob]", "type") == "number"
    assert pg.locator("#known-tag option[value=any]").count() == 1  # the stored tags are offered

    pg.fill("#text-input", "a medical image")
    pg.fill("#k-input", "20")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, "0")
    thumbs_loaded(pg)
    cards = _cards(pg)
    assert len(cards) == 10
    assert all(c["tags"] == ["any"] and c["probes"] == {} for c in cards.values())  # a chip for the tag on each hit

    # mark CT and MR "more like this", the rest "not like this"; too few of a class first: a readable refusal
    liked = [i for i, c in cards.items() if c["modality"] in ("CT", "MR")]
    unliked = [i for i in cards if i not in liked]
    assert len(liked) >= 3 and len(unliked) >= 3
    for image_id in liked[:2]:
        pg.locator(f"[data-testid=mark-like][data-id='{image_id}']").click()
    pg.locator(f"[data-testid=mark-unlike][data-id='{unliked[0]}']").click()
    assert pg.inner_text("#probe-train") == "Train a classifier from my marks (2 liked, 1 not)"
    assert pg.is_disabled("#probe-train")  # at least 3 of each
    assert "at least 3" in (pg.get_attribute("#probe-train", "title") or "")
    pg.fill("#probe-name", "head")
    for image_id in liked[2:]:
        pg.locator(f"[data-testid=mark-like][data-id='{image_id}']").click()
    for image_id in unliked[1:]:
        pg.locator(f"[data-testid=mark-unlike][data-id='{image_id}']").click()
    pg.click("#probe-train")
    pg.wait_for_selector("#probe-result[data-auc]")
    assert pg.is_hidden("#probe-error")
    assert len(trained) == 1
    probe = trained[0]
    assert (probe["positives"], probe["negatives"]) == (len(liked), len(unliked))
    text = pg.inner_text("#probe-result")
    assert f"cross-validated ROC AUC {probe['cv_auc']:.3f}" in text and "Not applied yet" in text
    assert float(pg.get_attribute("#probe-result", "data-auc") or -1) == pytest.approx(probe["cv_auc"])
    assert httpx.get(server + "/v1/probes").json()[0]["applied"] is False  # the AUC is shown before applying
    save_shot(pg, "30-probe-trained.png")

    pg.click("#probe-apply")
    pg.wait_for_selector("#probe-result[data-applied=true]")
    assert "Applied to 10 images" in pg.inner_text("#probe-result")
    seq = pg.get_attribute("#results", "data-seq")
    pg.click("#probe-filter")
    wait_for_new_results(pg, seq)
    assert pg.input_value("[data-filter=probe]") == "head" and pg.input_value("[data-filter=min_prob]") == "0.5"
    filtered = _cards(pg)
    body = {"text": "a medical image", "k": 20, "probe": "head", "min_prob": 0.5}
    expected = {h["id"]: h["probes"]["head"] for h in httpx.post(server + "/v1/search/text", json=body).json()["hits"]}
    assert set(filtered) == set(expected)
    assert all(
        c["probes"]["head"] == pytest.approx(expected[i], abs=0.005) and c["probes"]["head"] >= 0.5
        for i, c in filtered.items()
    )
    assert "Probe: head" in pg.inner_text("#results-filters")
    save_shot(pg, "31-probe-filter.png")
    assert not errors, errors
