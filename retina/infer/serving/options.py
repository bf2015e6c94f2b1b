"""The options of one ``POST /predict`` (query string or form fields) and what they keep.

    conf=0.3          keep detections scoring above conf, as retina predict's conf= (default:
                      all the model returns)
    max_det=100       keep the best max_det
    classes=a,b       keep these classes (names, or dataset category ids)
    tile=400          predict window by window at native scale (large images)

A bad value is a :class:`~retina.infer.serving.decode.BadRequest` (400) naming the option,
with the nearest valid choice for a misspelt option or class.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from torch import Tensor

from retina.cli import suggest
from retina.infer.serving.decode import BadRequest

MIN_TILE = 64  # smaller windows would multiply a large image into too many network calls


@dataclass(frozen=True)
class RequestOptions:
    """What one request asks for beyond the model's own postprocess."""

    conf: float | None = None
    max_det: int | None = None
    classes: tuple[int, ...] | None = None  # contiguous labels 0..K-1
    tile: int | None = None


OPTIONS = tuple(f.name for f in fields(RequestOptions))


def _number(key: str, text: str, kind: type, low: float, high: float | None = None):
    try:
        value = kind(text)
    except ValueError:
        what = "a number" if kind is float else "an integer"
        raise BadRequest(400, f"{key}={text!r}: expected {what}") from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise BadRequest(400, f"{key}={text}: expected {bounds}")
    return value


def _classes(text: str, class_names: Sequence[str], cat_ids: Sequence[int]) -> tuple[int, ...]:
    """Labels of comma-separated class names (any case) or category ids."""
    by_name = {n.lower(): i for i, n in enumerate(class_names)}
    labels = []
    for word in (w.strip() for w in text.split(",") if w.strip()):
        if word.lower() in by_name:
            labels.append(by_name[word.lower()])
        elif word.lstrip("-").isdigit() and int(word) in cat_ids:
            labels.append(list(cat_ids).index(int(word)))
        else:
            close = difflib.get_close_matches(word.lower(), list(by_name), n=1)
            near = f" (did you mean {class_names[by_name[close[0]]]}?)" if close else ""
            raise BadRequest(400, f"classes: unknown class {word!r}{near}; classes: "
                                  f"{', '.join(class_names)}")
    if not labels:
        raise BadRequest(400, "classes= is empty: name at least one class")
    return tuple(sorted(set(labels)))


def parse_options(raw: Mapping[str, str], class_names: Sequence[str],
                  cat_ids: Sequence[int]) -> RequestOptions:
    """Options from the request's ``key=value`` pairs (strings); an empty value is unset."""
    for key in raw:
        if key not in OPTIONS:
            raise BadRequest(400, f"unknown option {key!r}{suggest(key, OPTIONS)}; options: "
                                  f"{', '.join(OPTIONS)}")
    given = {k: v.strip() for k, v in raw.items() if v.strip()}
    return RequestOptions(
        conf=_number("conf", given["conf"], float, 0.0, 1.0) if "conf" in given else None,
        max_det=_number("max_det", given["max_det"], int, 1) if "max_det" in given else None,
        classes=_classes(given["classes"], class_names, cat_ids) if "classes" in given else None,
        tile=_number("tile", given["tile"], int, MIN_TILE) if "tile" in given else None,
    )


def select(det: dict[str, Tensor], options: RequestOptions) -> dict[str, Tensor]:
    """The detections that ``options`` keep, in their order (the predictors sort by score)."""
    keep = det["scores"] > options.conf if options.conf is not None else None
    if options.classes is not None:
        wanted = det["labels"].new_tensor(options.classes)
        in_classes = (det["labels"][:, None] == wanted[None]).any(1)  # (D,)
        keep = in_classes if keep is None else keep & in_classes
    if keep is not None:
        det = {k: v[keep] for k, v in det.items()}
    if options.max_det is not None:
        best = det["scores"].argsort(descending=True, stable=True)[: options.max_det]
        det = {k: v[best] for k, v in det.items()}
    return det
