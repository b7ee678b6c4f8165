"""Where ``landmark index add`` keeps the vectors of each enrolment (retrieval.pipeline.enrolment_file)."""
from landmark.retrieval import pipeline


def test_each_enrolment_gets_a_new_file_in_the_index_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.time, "strftime", lambda fmt: "20261207-154700")
    first = pipeline.enrolment_file(tmp_path)
    assert first == tmp_path / "added-20261207-154700.npy"
    first.write_bytes(b"")
    second = pipeline.enrolment_file(tmp_path)
    assert second == tmp_path / "added-20261207-154700-2.npy"
    second.write_bytes(b"")
    assert pipeline.enrolment_file(tmp_path).name == "added-20261207-154700-3.npy"
