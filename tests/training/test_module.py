"""retina.training.module: what validation logs per class (validation runs are in e2e/)."""

from retina.training.module import MAX_LOGGED_CLASSES, logged_class_ap


def test_per_class_ap_is_logged_for_the_first_classes_with_boxes():
    class_ap = {f"c{i}": (-1.0 if i % 3 == 0 else i / 100) for i in range(40)}
    logged = logged_class_ap(class_ap)
    # c0, c3, c6, ... have no validation boxes: the first 20 others are c1, c2, c4, ..., c29
    assert MAX_LOGGED_CLASSES == 20 and len(logged) == 20
    assert list(logged)[:3] == ["val/AP/c1", "val/AP/c2", "val/AP/c4"]
    assert list(logged)[-1] == "val/AP/c29" and logged["val/AP/c29"] == 0.29
    assert logged_class_ap({"Tree": 0.5, "Shrub": -1.0}, limit=1) == {"val/AP/Tree": 0.5}
