"""ricecli.cohort.rules + series: typing by headers with reasons, the choice, user rules."""

from __future__ import annotations

import pytest

from ricecli.cohort.rules import load_rules
from ricecli.cohort.series import Series, choose_t1c, skip_code, type_series
from ricecli.errors import InputError

RULES = load_rules()


def series(uid: str = "1.1", slices: int = 20, **facts: object) -> Series:
    return Series("P1", "1.2", uid, "MR", "1.9", tuple(f"f{k}" for k in range(slices)),
                  {"ImageType": ["ORIGINAL", "PRIMARY"], "SeriesNumber": "1", **facts},
                  slices, 1, False)


@pytest.mark.parametrize("description, kind", [
    ("CET1", "T1C"), ("T1C", "T1C"), ("T1+C", "T1C"), ("T1W_3D_TFE+C", "T1C"),
    ("t1_mprage_post KM", "T1C"), ("MPRAGE post", "T1C"), ("T1 KM", "T1C"), ("T1+Gd", "T1C"),
    ("Ax T1 GAD", "T1C"), ("T1 post contrast", "T1C"), ("t1_mprage_pre", "T1"),
    ("T1 nativ", "T1"), ("T1 ohne KM", "T1"), ("T1", "T1"), ("T2 TSE tra", "T2"),
    ("T2W_TSE", "T2"), ("FLAIR", "FLAIR"), ("T2 FLAIR", "FLAIR"), ("dark-fluid", "FLAIR"),
    ("DTI", "OTHER"),
])
def test_descriptions_in_the_conventions_clinics_use(description, kind):
    assert type_series(series(SeriesDescription=description), RULES).kind == kind


def test_tags_decide_without_a_description():
    t1c = type_series(series(ContrastBolusAgent="Gadovist 7.5 ml"), RULES)
    assert t1c.kind == "T1C" and "ContrastBolusAgent" in t1c.reason
    assert type_series(series(RepetitionTime="9000", InversionTime="2500", EchoTime="90"),
                       RULES).kind == "FLAIR"
    assert type_series(series(RepetitionTime="5000", EchoTime="95"), RULES).kind == "T2"
    assert type_series(series(RepetitionTime="550", EchoTime="10"), RULES).kind == "T1"
    pre = type_series(series(SeriesDescription="T1 pre", ContrastBolusAgent="Gd"), RULES)
    assert pre.kind == "T1" and skip_code(pre)[0] == "precontrast"


@pytest.mark.parametrize("facts, code", [
    ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "SeriesDescription": "CET1"},
     "localizer"),
    ({"SeriesDescription": "AAHead_Scout"}, "localizer"),
    ({"ImageType": ["DERIVED", "SECONDARY", "MPR"], "SeriesDescription": "CET1 sag"}, "mpr"),
    ({"ImageType": ["DERIVED", "PRIMARY", "SUBTRACTION"], "SeriesDescription": "T1 KM SUB"},
     "subtraction"),
    ({"ImageType": ["DERIVED", "SECONDARY"], "SeriesDescription": "T1C"}, "derived"),
    ({"ImageType": ["ORIGINAL", "PRIMARY"], "SeriesDescription": "T1 KM reformatiert"}, "mpr"),
])
def test_exclusions_carry_their_code_and_reason(facts, code):
    typing = type_series(series(**facts), RULES)
    assert typing.code == code and "~" in typing.reason


def test_derived_primary_is_kept_but_ranks_below_original():
    derived = series("1.1", SeriesDescription="T1C", ImageType=["DERIVED", "PRIMARY", "DIS3D"])
    assert type_series(derived, RULES).kind == "T1C"
    original = series("1.2", SeriesDescription="T1C")
    assert choose_t1c([derived, original]).chosen is original


def test_geometry_exclusions():
    assert type_series(series(slices=3, SeriesDescription="CET1"), RULES).code == \
        "too_few_slices"
    s = series(SeriesDescription="CET1")
    multi = Series(*[getattr(s, f) for f in ("patient_id", "study_uid", "series_uid",
                                             "modality", "frame_uid", "files", "facts",
                                             "slices")], 3, False)
    assert type_series(multi, RULES).code == "localizer"


def test_choice_prefers_original_3d_thin_then_flags_ties():
    thick = series("1.1", 20, SeriesDescription="T1C", SliceThickness="5")
    thin3d = series("1.2", 20, SeriesDescription="T1C", SliceThickness="1",
                    MRAcquisitionType="3D")
    thin2d = series("1.3", 40, SeriesDescription="T1C", SliceThickness="1")
    choice = choose_t1c([thick, thin2d, thin3d])
    assert choice.chosen is thin3d
    reasons = {s.series_uid: (code, why) for s, code, why in choice.rejected}
    assert reasons["1.3"][0] == "not_best" and "3D" in reasons["1.3"][1]
    twin = series("1.4", 20, SeriesDescription="T1C", SliceThickness="1",
                  MRAcquisitionType="3D")
    tie = choose_t1c([thin3d, twin, thick])
    assert tie.chosen is None
    assert sorted(s.series_uid for s, code, _ in tie.rejected if code == "tie") == ["1.2", "1.4"]


def test_user_rules_come_first_or_replace(tmp_path):
    user = tmp_path / "rules.toml"
    user.write_text("[[kind]]\nname = 'T1C'\nwhen = { SeriesDescription = ['^vibe_kont'] }\n")
    rules = load_rules(user)
    typing = type_series(series(SeriesDescription="vibe_kont"), rules)
    assert typing.kind == "T1C" and "rules.toml" in typing.reason
    assert type_series(series(SeriesDescription="CET1"), rules).kind == "T1C"  # defaults kept
    user.write_text("replace = true\n" + user.read_text())
    assert type_series(series(SeriesDescription="CET1"), load_rules(user)).kind == "OTHER"
    user.write_text("[[kind]]\nname = 'T1C'\nwhen = { SeriesDescription = ['(unclosed'] }\n")
    with pytest.raises(InputError, match="regular expression"):
        load_rules(user)
    user.write_text("[[kind]]\nname = 'DWI'\nwhen = { SeriesDescription = ['dwi'] }\n")
    with pytest.raises(InputError, match="not one of"):
        load_rules(user)
    user.write_text("[[kind]\n")
    with pytest.raises(InputError, match="TOML"):
        load_rules(user)


def test_broken_geometry_values_group_without_error():
    """NumberOfFrames and ImagePositionPatient as broken headers give them: no internal error."""
    from ricecli.cohort.series import group_series

    bad = [{"NumberOfFrames": "abc"}, {"NumberOfFrames": "inf", "ImagePositionPatient": ["1"]},
           {"NumberOfFrames": "", "ImagePositionPatient": ["nan", "0", "0"]}]
    entries = [{"path": f"f{k}", "facts": {"Modality": "MR", "PatientID": "P1",
                                            "StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.3",
                                            **facts}} for k, facts in enumerate(bad)]
    (one,) = group_series(entries)
    assert not one.multiframe and len(one.files) == 3
