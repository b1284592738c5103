"""ArtGAN label files: a real excerpt (tests/fixtures/wikiart, always), the full files (when ../shared/wikiart
exists) and every known quirk, synthetic."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from deepart.core.errors import DataError
from deepart.data.table import TaskTable
from deepart.data.wikiart import TASKS, load_wikiart, read_class_list, read_split, repair_mojibake
from tests.conftest import SHARED

EXCERPT = Path(__file__).parent / "fixtures" / "wikiart"
WIKIART = SHARED / "wikiart"
needs_real = pytest.mark.skipif(not (WIKIART / "style_train.csv").is_file(), reason="../shared/wikiart not present")

ROWS = {"style_train": 57025, "style_val": 24421, "genre_train": 45503, "genre_val": 19492,
        "artist_train": 13346, "artist_val": 5706}
EXCERPT_ROWS = {"style_train": 11, "style_val": 11, "genre_train": 6, "genre_val": 9,
                "artist_train": 6, "artist_val": 5}
VILLAGE = "Post_Impressionism/maurice-de-vlaminck_the-village.jpg"  # in genre_val.csv as cityscape and landscape

# The excerpt's images that are in one task's train split and another task's val split (see its README).
EXCERPT_LEAKED = {
    "Impressionism/joaquã\xadn-sorolla_beach-of-biarritz-france.jpg",  # style train, genre val
    "Cubism/andrã©-lhote_les-deux-amies-1925.jpg",  # style val, genre train
    "Impressionism/claude-monet_fruit-trees.jpg",  # style + genre train, artist val
    "Art_Nouveau_Modern/boris-kustodiev_bathing-1921.jpg",  # style + genre val, artist train
    "Art_Nouveau_Modern/raphael-kirchner_geisha.jpg",  # style + artist train, genre val
    "Romanticism/ivan-aivazovsky_sea-3.jpg",  # style val, artist train
    "Realism/pyotr-konchalovsky_daisies-1935.jpg",  # style train, artist val
}
# The excerpt's multi-task train table: path -> (style, genre, artist) label, -1 where the task does not list it.
EXCERPT_TRAIN = {
    "Baroque/rembrandt_flora.jpg": (4, 6, 20),
    "Art_Nouveau_Modern/nicholas-roerich_intercession-of-the-theotokos-1903.jpg": (3, 7, 14),
    "Realism/ilya-repin_horse.jpg": (21, -1, 8),
    "Baroque/mestre-ataã\xadde_anjos-detail.jpg": (4, 7, -1),
    "Art_Nouveau_Modern/eugã¨ne-grasset_froideur.jpg": (3, 2, -1),
    "Art_Nouveau_Modern/gustav-klimt_the-tree-of-life-stoclet-frieze.jpg": (3, -1, -1),
    "Symbolism/georges-lacombeâ\xa0_death.jpg": (24, -1, -1),
}
# The excerpt's mojibake paths (all in style/genre files) -> their UTF-8 spelling.
EXCERPT_MOJIBAKE = {
    "Impressionism/joaquã\xadn-sorolla_beach-of-biarritz-france.jpg":
        "Impressionism/joaquín-sorolla_beach-of-biarritz-france.jpg",
    "Baroque/mestre-ataã\xadde_anjos-detail.jpg": "Baroque/mestre-ataíde_anjos-detail.jpg",
    "Cubism/andrã©-lhote_les-deux-amies-1925.jpg": "Cubism/andré-lhote_les-deux-amies-1925.jpg",
    "Symbolism/arnold-bã¶cklin_honeymoon.jpg": "Symbolism/arnold-böcklin_honeymoon.jpg",
    "Art_Nouveau_Modern/eugã¨ne-grasset_froideur.jpg": "Art_Nouveau_Modern/eugène-grasset_froideur.jpg",
    "Romanticism/ferdinand-georg-waldmã¼ller_self-portrait-at-the-age-of-35.jpg":
        "Romanticism/ferdinand-georg-waldmüller_self-portrait-at-the-age-of-35.jpg",
    "Realism/antã³nio-de-carvalho-da-silva-porto_head-of-a-girl.jpg":
        "Realism/antónio-de-carvalho-da-silva-porto_head-of-a-girl.jpg",
    "Symbolism/georges-lacombeâ\xa0_death.jpg": "Symbolism/georges-lacombe\xa0_death.jpg",  # no-break space
}


def parse(root: Path, name: str) -> pd.DataFrame:
    """Rows of split file `name` under `root`, checked against its class list."""
    task = name.split("_")[0]
    classes = read_class_list(root / f"{task}_class.txt")
    frame = read_split(root / f"{name}.csv", len(classes))
    assert frame["label"].between(0, len(classes) - 1).all()
    return frame


def art_nouveau_rows(root: Path, split: str) -> pd.DataFrame:
    """Rows of style_<split>.csv labelled Art_Nouveau; they must all be under folder Art_Nouveau_Modern/."""
    assert [len(read_class_list(root / f"{t}_class.txt")) for t in TASKS] == [27, 10, 23]
    style = read_class_list(root / "style_class.txt")
    frame = read_split(root / f"style_{split}.csv", len(style))
    nouveau = frame[frame["label"] == style.index("Art_Nouveau")]
    assert nouveau["path"].str.startswith("Art_Nouveau_Modern/").all()
    assert not frame["path"].str.startswith("Art_Nouveau/").any()
    return nouveau


def check_multitask_join(root: Path) -> TaskTable:
    """The three-task table: no val image in train, each task labelled in val from exactly its own val file, the
    conflicting duplicate unlabelled for genre, every train row labelled for some task."""
    table = load_wikiart(root, missing_images="ignore")
    assert not set(table.train["path"]) & set(table.val["path"])
    for task in TASKS:
        val_file = read_split(root / f"{task}_val.csv", len(table.tasks[task]))
        labelled = table.val[table.val[task] >= 0]
        expected = set(val_file["path"]) - ({VILLAGE} if task == "genre" else set())
        assert set(labelled["path"]) == expected  # each task is scored on its own val split
    village = table.val[table.val["path"] == VILLAGE]
    assert len(village) == 1 and village["genre"].item() == -1 and village["style"].item() == 20
    assert (table.train[list(TASKS)] >= 0).any(axis=1).all()
    return table


def check_single_task_split(root: Path, task: str) -> None:
    table = load_wikiart(root, tasks=[task], missing_images="ignore")
    n = len(table.tasks[task])
    for split in ("train", "val"):
        expected = read_split(root / f"{task}_{split}.csv", n)
        got = (table.train if split == "train" else table.val)[["path", task]]
        pd.testing.assert_frame_equal(got.rename(columns={task: "label"}).reset_index(drop=True), expected)


def non_ascii_style_genre_paths(root: Path) -> list[str]:
    paths = pd.concat([read_split(root / f"{t}_{s}.csv", 10**6)["path"]
                       for t in ("style", "genre") for s in ("train", "val")]).unique()
    return [p for p in paths if not p.isascii()]


# --- the excerpt: real rows, always present --------------------------------------------------------------------


def test_excerpt_keeps_the_real_line_format():
    for name, rows in EXCERPT_ROWS.items():
        lines = (EXCERPT / f"{name}.csv").read_bytes().splitlines(keepends=True)
        if name.startswith("artist"):
            assert lines[0].startswith(b"(Path to image),, (Groundtruth class)") and lines[1] == b"\n"
            assert all(line.endswith(b"\n") and b"\r" not in line and b",," in line for line in lines[2:])
            assert len(lines) - 2 == rows
        else:
            assert all(line.endswith(b"\r\n") and b",," not in line for line in lines)
            assert len(lines) == rows


@pytest.mark.parametrize("name,rows", EXCERPT_ROWS.items())
def test_excerpt_files_parse(name, rows):
    assert len(parse(EXCERPT, name)) == rows


def test_excerpt_class_counts_and_folder_quirk():
    assert len(art_nouveau_rows(EXCERPT, "train")) == 4
    assert art_nouveau_rows(EXCERPT, "val")["path"].tolist() == [
        "Art_Nouveau_Modern/ivan-bilibin_moscow-1900.jpg",
        "Art_Nouveau_Modern/raphael-kirchner_girl-scout-new-york-tribune-1916.jpg",
        "Art_Nouveau_Modern/boris-kustodiev_bathing-1921.jpg"]


def test_excerpt_multitask_join_keeps_val_out_of_train():
    table = check_multitask_join(EXCERPT)
    assert "7 images listed in a train split are in another task's val split and are excluded from train" in table.notes
    assert any(n.startswith("genre_val.csv: 1 image(s) listed with different labels") and VILLAGE in n
               for n in table.notes)
    assert EXCERPT_LEAKED <= set(table.val["path"])
    train = {row.path: (row.style, row.genre, row.artist) for row in table.train.itertuples(index=False)}
    assert train == EXCERPT_TRAIN  # labelled for three tasks (2 images), two (3), one (2)
    assert len(table.val) == 15
    assert [(table.val[t] >= 0).sum() for t in TASKS] == [11, 7, 5]


def test_excerpt_single_task_genre_keeps_the_duplicate_rows():
    table = load_wikiart(EXCERPT, tasks=["genre"], missing_images="ignore")
    assert len(table.val) == 9
    assert table.val.loc[table.val["path"] == VILLAGE, "genre"].tolist() == [1, 4]  # cityscape, landscape
    assert not table.notes


@pytest.mark.parametrize("task", TASKS)
def test_excerpt_single_task_split_equals_the_file(task):
    check_single_task_split(EXCERPT, task)


def test_excerpt_mojibake_paths_all_repair():
    assert {p: repair_mojibake(p) for p in non_ascii_style_genre_paths(EXCERPT)} == EXCERPT_MOJIBAKE


def test_excerpt_images_found_under_their_repaired_spelling(tmp_path):
    """With every image stored under its UTF-8 name, the three-task table finds them all (missing_images=error)."""
    for file in EXCERPT.iterdir():
        shutil.copyfile(file, tmp_path / file.name)
    listed = pd.concat([read_split(EXCERPT / f"{name}.csv", 10**6)["path"] for name in EXCERPT_ROWS]).unique()
    assert len(listed) == 22
    for path in listed:
        stored = tmp_path / "images" / EXCERPT_MOJIBAKE.get(path, path)
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(b"x")
    table = load_wikiart(tmp_path)
    assert any(n.startswith("8 listed paths are stored under their repaired UTF-8 spelling") for n in table.notes)
    assert set(table.train["path"]) | set(table.val["path"]) == {EXCERPT_MOJIBAKE.get(p, p) for p in listed}


@needs_real
def test_excerpt_rows_are_real_rows():
    """Every excerpt line is a line of the full file, and every row of the full files that lists an excerpt image
    is in the excerpt (so the excerpt's join equals the full join restricted to its images)."""
    for name in ("LICENSE.ArtGAN", *(f"{t}_class.txt" for t in TASKS)):
        assert (EXCERPT / name).read_bytes() == (WIKIART / name).read_bytes()
    images = set(pd.concat([read_split(EXCERPT / f"{name}.csv", 10**6)["path"] for name in EXCERPT_ROWS]))
    for name in EXCERPT_ROWS:
        excerpt = (EXCERPT / f"{name}.csv").read_bytes().splitlines(keepends=True)
        full = (WIKIART / f"{name}.csv").read_bytes().splitlines(keepends=True)
        if name.startswith("artist"):
            assert excerpt[:2] == full[:2]  # header line and blank line
        assert set(excerpt) <= set(full)  # byte for byte, line endings included
        full_rows = read_split(WIKIART / f"{name}.csv", 10**6)
        of_images = full_rows[full_rows["path"].isin(images)].reset_index(drop=True)
        pd.testing.assert_frame_equal(read_split(EXCERPT / f"{name}.csv", 10**6), of_images)  # all, in order


# --- the full files: only where ../shared/wikiart exists ------------------------------------------------------


@needs_real
@pytest.mark.parametrize("name,rows", ROWS.items())
def test_real_files_parse_with_published_row_counts(name, rows):
    assert len(parse(WIKIART, name)) == rows


@needs_real
def test_real_class_counts_and_folder_quirk():
    assert len(art_nouveau_rows(WIKIART, "train")) > 0 and len(art_nouveau_rows(WIKIART, "val")) > 0


@needs_real
def test_real_multitask_join_keeps_val_out_of_train():
    table = check_multitask_join(WIKIART)
    assert any("566 images listed in a train split" in n for n in table.notes)


@needs_real
@pytest.mark.parametrize("task", TASKS)
def test_real_single_task_split_equals_the_file(task):
    check_single_task_split(WIKIART, task)


@needs_real
def test_real_non_ascii_paths_all_repair():
    odd = non_ascii_style_genre_paths(WIKIART)
    assert len(odd) == 709
    repaired = [repair_mojibake(p) for p in odd]
    assert None not in repaired and "Impressionism/joaquín-sorolla_the-young-yachtsman-1909.jpg" in repaired
    assert not any("ã" in p or "â" in p for p in repaired)


# --- synthetic files: each quirk on its own -------------------------------------------------------------------


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
