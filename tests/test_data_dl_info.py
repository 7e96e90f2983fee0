"""DL_info.csv reader: round trip, hand-written rows, malformed rows -> A3DError naming file/line/column."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from a3d.data import COLUMNS, group_by_key_slice, read_dl_info, select_split
from a3d.errors import A3DError

HEADER = ",".join(COLUMNS)
ROW1 = ('000001_01_01_109.png,1,1,1,109,"233.537, 95.0204, 234.893, 76.1188, 227.933, 83.8592, 240.623, 89.2446",'
        '"226.169, 90.0204, 241.003, 108.524","19.0641, 14.3297","0.44786, 0.406295, 0.422633",3,0,"103, 115",'
        '"0.820312, 0.820312, 5","512, 512","-175, 275",F,62,3')
ROW2 = ('000001_01_01_109.png,1,1,1,109,"1, 2, 11, 2, 6, 0, 6, 4","1, 1, 12, 6","10, 4","0.1, 0.2, 0.3",-1,1,'
        '"103, 115","0.7, 0.7, 5","512, 512","-1350, 150",F,,1')
ROW3 = ('000002_01_02_010.png,2,1,2,10,"1, 2, 11, 2, 6, 0, 6, 4","1, 1, 12, 6","10, 4","0.1, 0.2, 0.3",5,0,'
        '"1, 20","0.7, 0.7, 1.25","512, 512","-1350, 150",M,45,2')


def _write(tmp_path, *rows, header=HEADER):
    p = tmp_path / "DL_info.csv"
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


def test_hand_written_rows(tmp_path):
    recs = read_dl_info(_write(tmp_path, ROW1, ROW2, ROW3))
    assert len(recs) == 3
    r = recs[0]
    assert r.line == 2 and r.file_name == "000001_01_01_109.png"
    assert (r.patient, r.study, r.series, r.key_slice) == (1, 1, 1, 109)
    assert r.series_dir == "000001_01_01" and r.image_id == "000001_01_01_109"
    assert r.recist.dtype == np.float32 and r.recist.shape == (8,)
    np.testing.assert_allclose(r.recist[:2], [232.537, 94.0204], rtol=1e-6)  # 1-based -> 0-based
    np.testing.assert_allclose(r.box, [225.169, 89.0204, 240.003, 107.524], rtol=1e-6)
    np.testing.assert_allclose(r.diameters_px, [19.0641, 14.3297], rtol=1e-6)  # lengths unchanged
    np.testing.assert_allclose(r.location, [0.44786, 0.406295, 0.422633], rtol=1e-6)
    assert r.lesion_type == 3 and r.noisy is False and r.slice_range == (103, 115)
    np.testing.assert_allclose(r.spacing, [0.820312, 0.820312, 5.0], rtol=1e-6)
    assert r.image_size == (512, 512) and r.window == (-175.0, 275.0)
    assert r.gender == "F" and r.age == 62.0 and r.split == 3
    assert r.slice_interval == 5.0
    np.testing.assert_allclose(r.diameters_mm, [19.0641 * 0.820312, 14.3297 * 0.820312], rtol=1e-5)
    # empty age, negative type, noisy
    assert recs[1].age is None and recs[1].lesion_type == -1 and recs[1].noisy is True and recs[1].line == 3
    np.testing.assert_array_equal(recs[1].box, [0, 0, 11, 5])
    assert recs[2].lesion_type == 5 and recs[2].split == 2 and recs[2].spacing[2] == np.float32(1.25)


def test_grouping_and_splits(tmp_path):
    recs = read_dl_info(_write(tmp_path, ROW1, ROW2, ROW3))
    groups = group_by_key_slice(recs)
    assert [len(g) for g in groups] == [2, 1]
    assert [len(g) for g in group_by_key_slice(recs, drop_noisy=True)] == [1, 1]
    assert [r.line for r in select_split(recs, "test")] == [2]
    assert [r.line for r in select_split(recs, "val")] == [4]
    assert [r.line for r in select_split(recs, "train")] == [3]
    assert len(select_split(recs, "all")) == 3
    with pytest.raises(A3DError, match="unknown split"):
        select_split(recs, "training")


def test_columns_in_other_order(tmp_path):
    cols = list(COLUMNS)
    rows = list(csv.reader([ROW1]))
    order = list(reversed(range(len(cols))))
    p = tmp_path / "x.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([cols[i] for i in order])
        w.writerow([rows[0][i] for i in order])
    (r,) = read_dl_info(p)
    assert r.key_slice == 109 and r.split == 3


def test_round_trip_on_generated_data(synth_root):
    recs = read_dl_info(synth_root / "DL_info.csv")
    with open(synth_root / "DL_info.csv", newline="") as f:
        raw = list(csv.DictReader(f))
    assert len(recs) == len(raw) > 0
    for r, row in zip(recs, raw):
        assert r.file_name == row["File_name"]
        box = np.array([float(v) for v in row["Bounding_boxes"].split(",")]) - 1
        np.testing.assert_allclose(r.box, box, atol=1e-4)
        assert r.slice_range[0] <= r.key_slice <= r.slice_range[1]
        assert r.split == int(row["Train_Val_Test"])
        assert (synth_root / "Images_png" / r.series_dir / f"{r.key_slice:03d}.png").exists()


@pytest.mark.parametrize(
    "row, column",
    [
        (ROW1.replace(",F,62,3", ",F,62"), "fields"),  # wrong field count
        (ROW1.replace('"19.0641, 14.3297"', '"19.0641, abc"'), "Lesion_diameters_Pixel_"),
        (ROW1.replace('"19.0641, 14.3297"', '"19.0641"'), "Lesion_diameters_Pixel_"),
        (ROW1.replace('"226.169, 90.0204, 241.003, 108.524"', '"250.169, 90.0204, 241.003, 108.524"'),
         "Bounding_boxes"),
        (ROW1.replace(",F,62,3", ",F,62,4"), "Train_Val_Test"),
        (ROW1.replace(",F,62,3", ",F,sixty,3"), "Patient_age"),
        (ROW1.replace(',"103, 115",', ',"110, 115",'), "Key_slice_index"),
        (ROW1.replace(",3,0,", ",9,0,"), "Coarse_lesion_type"),
        (ROW1.replace("000001_01_01_109.png", "000001_01_01_108.png"), "File_name"),
    ],
)
def test_malformed_row(tmp_path, row, column):
    p = _write(tmp_path, ROW3, row)
    with pytest.raises(A3DError) as e:
        read_dl_info(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg
    if column != "fields":
        assert column in msg
    assert "\n" not in msg


def test_missing_column(tmp_path):
    header = HEADER.replace("Possibly_noisy,", "")
    row = ROW1.replace(",3,0,", ",3,")
    p = _write(tmp_path, row, header=header)
    with pytest.raises(A3DError, match="Possibly_noisy") as e:
        read_dl_info(p)
    assert str(p) in str(e.value) and "line 1" in str(e.value)


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(A3DError, match="not found"):
        read_dl_info(tmp_path / "nope.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(A3DError, match="empty"):
        read_dl_info(tmp_path / "e.csv")
    assert read_dl_info(_write(tmp_path)) == []


def test_misaligned_counts_are_caught(tmp_path):
    # 1 + 3 numbers = 2 rows x 2 numbers in total: must still be caught per row
    a = ROW1.replace('"19.0641, 14.3297"', '"19.0641"')
    b = ROW3.replace('"10, 4"', '"10, 4, 3"')
    p = _write(tmp_path, a, b)
    with pytest.raises(A3DError, match="line 2, column Lesion_diameters_Pixel_"):
        read_dl_info(p)


def test_gc_state_restored(tmp_path):
    import gc

    read_dl_info(_write(tmp_path, ROW1))
    assert gc.isenabled()
