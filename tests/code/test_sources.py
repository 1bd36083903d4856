"""Source readers: label syntax, format detection, COCO mapping and policies, VOC options."""

from __future__ import annotations

import json

import pytest

from tasks.common.config import IngestConfig
from tasks.dataset.sources import SourceError, join_rel, read_coco, read_manifest, read_voc, split_labels


def _cfg(tmp_path, **kw) -> IngestConfig:
    return IngestConfig.model_validate({"root": str(tmp_path), **kw})


@pytest.mark.parametrize("field,tokens", [
    ("13,18", ["13", "18"]), ("13;18", ["13", "18"]), ("13 18", ["13", "18"]),
    (" a , b ;c", ["a", "b", "c"]), ("traffic light;person", ["traffic light", "person"]), ("", []),
])
def test_label_fields_split_on_comma_semicolon_or_space(field, tokens):
    assert split_labels(field) == tokens


def test_join_rel_keeps_escapes_visible():
    assert join_rel("images", "a.jpg") == "images/a.jpg"
    assert join_rel(".", "JPEGImages", "a.jpg") == "JPEGImages/a.jpg"
    assert join_rel("images", "../a.jpg") == "images/../a.jpg"
    assert join_rel("images", "/etc/passwd") == "/etc/passwd"


def _manifest(tmp_path, text: str, **kw):
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    (tmp_path / "labels.csv").write_text(text)
    return read_manifest(tmp_path, _cfg(tmp_path, labels="labels.csv", **kw))


def test_manifest_reads_the_study_format_without_header(tmp_path):
    src = _manifest(tmp_path, "0.jpg\t0,2\n1.jpg\t1\n")
    assert [(r.row, r.file, r.labels) for r in src.rows] == [(1, "images/0.jpg", ("cat", "bird")), (2, "images/1.jpg", ("dog",))]


def test_manifest_csv_by_name_with_header(tmp_path):
    src = _manifest(tmp_path, "filename,labels\na.jpg,\"dog,cat\"\nb.jpg,bird\n")
    assert [r.labels for r in src.rows] == [("cat", "dog"), ("bird",)] and src.rows[0].row == 2


def test_auto_format_is_not_flipped_by_one_bad_token(tmp_path):
    src = _manifest(tmp_path, "a.jpg\t0\nb.jpg\t1,zebra\nc.jpg\t2\n")
    assert [r.fault for r in src.rows] == [None, "unknown_label", None]


def test_forced_index_format_rejects_names(tmp_path):
    src = _manifest(tmp_path, "a.jpg\tcat\n", label_format="index")
    assert src.rows[0].fault == "unknown_label"


def test_duplicate_class_names_are_an_error(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ncat\n")
    (tmp_path / "labels.tsv").write_text("a.jpg\t0\n")
    with pytest.raises(SourceError, match="duplicate class"):
        read_manifest(tmp_path, _cfg(tmp_path))


def _coco(tmp_path, anns, **kw):
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 5, "file_name": "c.jpg"}],
           "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
           "annotations": [{"image_id": i, "category_id": c} for i, c in anns]}
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    return read_coco(tmp_path, _cfg(tmp_path, source="coco", coco_annotations="coco.json", **kw))


def test_coco_labels_are_the_categories_present_in_category_id_order(tmp_path):
    src = _coco(tmp_path, [(1, 18), (1, 18), (1, 1), (2, 17)])
    assert src.classes == ["person", "cat", "dog"]
    assert [r.labels for r in src.rows] == [("person", "dog"), ("cat",), ()]


def test_coco_mapping_merges_categories_and_applies_the_unmapped_policy(tmp_path):
    mapping = {"dog": "pet", "cat": "pet"}
    src = _coco(tmp_path, [(1, 18), (1, 17), (2, 1)], coco_mapping=mapping)
    assert src.classes == ["pet"]
    assert [(r.labels, r.fault) for r in src.rows] == [(("pet",), None), ((), "no_mapped_category"), ((), None)]
    kept = _coco(tmp_path, [(2, 1)], coco_mapping=mapping, coco_unmapped="keep_empty")
    assert kept.rows[1].keep_empty and not kept.rows[2].keep_empty  # c.jpg had no objects at all


def test_coco_annotation_with_an_unknown_category_is_a_row_fault(tmp_path):
    assert _coco(tmp_path, [(1, 99)]).rows[0].fault == "unknown_label"


def test_broken_coco_json_names_the_file(tmp_path):
    (tmp_path / "coco.json").write_text("{not json")
    with pytest.raises(SourceError, match="coco.json"):
        read_coco(tmp_path, _cfg(tmp_path, source="coco", coco_annotations="coco.json"))


def _voc(tmp_path, **kw):
    ann = tmp_path / "VOC" / "Annotations"
    ann.mkdir(parents=True)
    obj = "<object><name>{}</name><difficult>{}</difficult></object>"
    (ann / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{obj.format('dog', 0)}{obj.format('cat', 1)}</annotation>")
    (ann / "b.xml").write_text("<annotation><filename>b.jpg</filename")
    (tmp_path / "VOC" / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "VOC" / "ImageSets" / "Main" / "test.txt").write_text("a\n")
    return read_voc(tmp_path, _cfg(tmp_path, source="voc", **kw))


def test_voc_skips_difficult_objects_unless_included(tmp_path):
    assert _voc(tmp_path).rows[0].labels == ("dog",)


def test_voc_includes_difficult_objects_when_asked(tmp_path):
    assert _voc(tmp_path, voc_difficult="include").rows[0].labels == ("cat", "dog")


def test_voc_reads_test_split_and_flags_broken_xml(tmp_path):
    rows = _voc(tmp_path).rows
    assert (rows[0].file, rows[0].split_hint) == ("VOC/JPEGImages/a.jpg", "test")
    assert rows[1].fault == "malformed_annotation"
