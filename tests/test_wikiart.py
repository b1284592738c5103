"""ArtGAN label files: the real ones (when ../shared/wikiart exists) and every known quirk, synthetic."""
import pandas as pd
import pytest

from deepart.data.wikiart import load_wikiart, read_class_list, read_split
from deepart.errors import DataError
from tests.conftest import SHARED

WIKIART = SHARED / "wikiart"
needs_real = pytest.mark.skipif(not (WIKIART / "style_train.csv").is_file(), reason="../shared/wikiart not present")

ROWS = {"style_train": 57025, "style_val": 24421, "genre_train": 45503, "genre_val": 19492,
        "artist_train": 13346, "artist_val": 5706}


@needs_real
@pytest.mark.parametrize("name,rows", ROWS.items())
def test_real_files_parse_with_published_row_counts(name, rows):
    task = name.split("_")[0]
    classes = read_class_list(WIKIART / f"{task}_class.txt")
    frame = read_split(WIKIART / f"{name}.csv", len(classes))
    assert len(frame) == rows
    assert frame["label"].between(0, len(classes) - 1).all()


@needs_real
def test_real_class_counts_and_folder_quirk():
    assert [len(read_class_list(WIKIART / f"{t}_class.txt")) for t in ("style", "genre", "artist")] == [27, 10, 23]
    style = read_class_list(WIKIART / "style_class.txt")
    frame = read_split(WIKIART / "style_train.csv", 27)
    nouveau = frame[frame["label"] == style.index("Art_Nouveau")]
    assert len(nouveau) > 0 and nouveau["path"].str.startswith("Art_Nouveau_Modern/").all()


@needs_real
def test_real_multitask_join_keeps_val_out_of_train():
    table = load_wikiart(WIKIART, missing_images="ignore")
    assert not set(table.train["path"]) & set(table.val["path"])
    ambiguous = {"Post_Impressionism/maurice-de-vlaminck_the-village.jpg"}  # listed as two genres
    for task in ("style", "genre", "artist"):
        val_file = read_split(WIKIART / f"{task}_val.csv", len(table.tasks[task]))
        labelled = table.val[table.val[task] >= 0]
        expected = set(val_file["path"]) - (ambiguous if task == "genre" else set())
        assert set(labelled["path"]) == expected  # each task is scored on its own val split
    assert any("566 images listed in a train split" in n for n in table.notes)
    # the painting listed in genre_val.csv as both cityscape and landscape has no genre label
    village = table.val[table.val["path"] == "Post_Impressionism/maurice-de-vlaminck_the-village.jpg"]
    assert len(village) == 1 and village["genre"].item() == -1
    assert (table.train[["style", "genre", "artist"]] >= 0).any(axis=1).all()


@needs_real
@pytest.mark.parametrize("task", ["style", "genre", "artist"])
def test_real_single_task_split_equals_the_file(task):
    table = load_wikiart(WIKIART, tasks=[task], missing_images="ignore")
    n = len(table.tasks[task])
    for split in ("train", "val"):
        expected = read_split(WIKIART / f"{task}_{split}.csv", n)
        got = (table.train if split == "train" else table.val)[["path", task]]
        pd.testing.assert_frame_equal(got.rename(columns={task: "label"}).reset_index(drop=True), expected)


def write(path, text, newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))


def test_quirks_crlf_header_blank_line_double_comma_bom(tmp_path):
    write(tmp_path / "a.csv", "\ufeffX/one.jpg,1\nX/two.jpg,0\n", newline="\r\n")
    write(tmp_path / "b.csv", "(Path to image),, (Groundtruth class) \n\nX/one.jpg,,2\n\nX/three.jpg,,0\n")
    a = read_split(tmp_path / "a.csv", 2)
    b = read_split(tmp_path / "b.csv", 3)
    assert a.to_dict("list") == {"path": ["X/one.jpg", "X/two.jpg"], "label": [1, 0]}
    assert b.to_dict("list") == {"path": ["X/one.jpg", "X/three.jpg"], "label": [2, 0]}


def test_duplicate_rows(tmp_path):
    from deepart.data.wikiart import unique_labels

    write(tmp_path / "dup.csv", "X/a.jpg,1\nX/b.jpg,0\nX/a.jpg,1\nX/c.jpg,0\nX/c.jpg,1\n")
    frame = read_split(tmp_path / "dup.csv", 2)
    assert len(frame) == 5  # every published row
    notes = []
    unique = unique_labels(frame, "dup.csv", notes)
    assert unique.to_dict("list") == {"path": ["X/a.jpg", "X/b.jpg", "X/c.jpg"], "label": [1, 0, -1]}
    assert len(notes) == 2 and "different labels" in notes[0] and "X/c.jpg" in notes[0]


def test_multitask_join_with_independent_splits(tmp_path):
    """An image in one task's train split and another task's val split never trains."""
    for task, n in (("style", 3), ("genre", 2)):
        write(tmp_path / f"{task}_class.txt", "".join(f"{i} {task}{i}\n" for i in range(n)))
    write(tmp_path / "style_train.csv", "A/1.jpg,0\nA/2.jpg,1\nA/3.jpg,2\n", "\r\n")
    write(tmp_path / "style_val.csv", "A/4.jpg,0\n", "\r\n")
    write(tmp_path / "genre_train.csv", "A/1.jpg,1\nA/4.jpg,0\n", "\r\n")
    write(tmp_path / "genre_val.csv", "A/2.jpg,1\nA/5.jpg,0\n", "\r\n")
    table = load_wikiart(tmp_path, tasks=["style", "genre"], missing_images="ignore")
    train = table.train.set_index("path")
    assert sorted(train.index) == ["A/1.jpg", "A/3.jpg"]
    assert train.loc["A/1.jpg"].tolist() == [0, 1] and train.loc["A/3.jpg"].tolist() == [2, -1]
    val = table.val.set_index("path")
    assert val.loc["A/2.jpg"].tolist() == [-1, 1]  # style label of A/2 came from a train file: not scored
    assert val.loc["A/4.jpg"].tolist() == [0, -1]
    assert any("2 images listed in a train split" in n for n in table.notes)


def test_missing_images_policy(tmp_path):
    write(tmp_path / "style_class.txt", "0 a\n1 b\n")
    write(tmp_path / "style_train.csv", "a/1.jpg,0\na/2.jpg,1\n")
    write(tmp_path / "style_val.csv", "a/3.jpg,0\n")
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "a" / "1.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"2 of 3 listed images are missing.*a/2\.jpg.*missing_images=skip"):
        load_wikiart(tmp_path, tasks=["style"])
    table = load_wikiart(tmp_path, tasks=["style"], missing_images="skip")
    assert table.train["path"].tolist() == ["a/1.jpg"] and len(table.val) == 0


def test_label_out_of_range_names_file_and_line(tmp_path):
    write(tmp_path / "s.csv", "X/a.jpg,1\nX/b.jpg,27\n")
    with pytest.raises(DataError, match=r"s\.csv:2: label 27 is out of range 0\.\.26"):
        read_split(tmp_path / "s.csv", 27)
    write(tmp_path / "t.csv", "X/a.jpg,one\n")
    with pytest.raises(DataError, match=r"t\.csv:1: label 'one' is not an integer"):
        read_split(tmp_path / "t.csv", 3)


def test_class_list_must_be_consecutive(tmp_path):
    write(tmp_path / "c.txt", "0 A\n2 C\n")
    with pytest.raises(DataError, match=r"c\.txt:2"):
        read_class_list(tmp_path / "c.txt")


def test_mojibake_paths_resolve_to_whichever_spelling_exists(tmp_path):
    import unicodedata

    listed = ["Impressionism/joaquã\xadn-sorolla_beach.jpg", "Cubism/andrã©-lhote_two.jpg",
              "Symbolism/georges-lacombeâ\xa0_death.jpg", "Cubism/plain.jpg"]
    write(tmp_path / "style_class.txt", "0 a\n")
    write(tmp_path / "style_train.csv", "".join(f"{p},0\n" for p in listed[:3]), "\r\n")
    write(tmp_path / "style_val.csv", f"{listed[3]},0\n", "\r\n")
    on_disk = ["Impressionism/joaquín-sorolla_beach.jpg",                      # repaired, NFC
               unicodedata.normalize("NFD", "Cubism/andré-lhote_two.jpg"),     # repaired, NFD (macOS)
               listed[2], listed[3]]                                            # as listed
    for rel in on_disk:
        (tmp_path / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / rel).write_bytes(b"x")
    table = load_wikiart(tmp_path, tasks=["style"])  # missing_images=error: nothing is missing
    assert sorted(table.train["path"]) == sorted(on_disk[:3])
    assert all(table.resolve(p).is_file() for p in [*table.train["path"], *table.val["path"]])
    assert any("repaired UTF-8 spelling" in n for n in table.notes)


@needs_real
def test_real_non_ascii_paths_all_repair():
    from deepart.data.wikiart import repair_mojibake

    paths = pd.concat([read_split(WIKIART / f"{t}_{s}.csv", 10**6)["path"]
                       for t in ("style", "genre") for s in ("train", "val")]).unique()
    odd = [p for p in paths if not p.isascii()]
    assert len(odd) == 709
    repaired = [repair_mojibake(p) for p in odd]
    assert None not in repaired and "Impressionism/joaquín-sorolla_the-young-yachtsman-1909.jpg" in repaired
    assert not any("ã" in p or "â" in p for p in repaired)
