"""The studio's REST API through FastAPI's test client: auth, uploads, validation. The queue,
which starts processes, is tested in tests/integration/test_studio_api_processes.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from peftstudio.data import images
from peftstudio.studio.context import StudioSettings
from peftstudio.studio.server import create_app
from peftstudio.units import GIB
from tests.conftest import CPU
from tests.unit.test_hostile_yaml import HOSTILE as HOSTILE_YAML

STAND_IN = """
import json, pathlib, sys, time
job = pathlib.Path(sys.argv[1])
(job / "started").write_text(str(time.time()))
while not (job / "release").exists():
    time.sleep(0.02)
code = int((job / "release").read_text() or 0)
(job / "exit_status.json").write_text(json.dumps({"exit_code": code}))
"""


def stand_in(job_dir: Path) -> list[str]:
    return [sys.executable, "-c", STAND_IN, str(job_dir)]


def make_client(data_dir: Path, token: str | None = None, **kwargs) -> TestClient:
    app = create_app(StudioSettings(data_dir=data_dir, token=token, **kwargs), runner_command=stand_in, run_queue=False)
    app.state.studio._hardware = CPU  # no torch import for detection in unit tests
    return TestClient(app)


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path / "studio") as test_client:
        yield test_client
        test_client.app.state.studio.runner.kill_all()


TINY = {"groups": {"model": "tiny"}, "values": {"training.num_batches": 4}}


# ---------------------------------------------------------------- auth

def test_token_required_on_every_api_call_and_page(tmp_path):
    with make_client(tmp_path / "s", token="s3cret") as client:
        for path in ("/api/presets", "/api/jobs", "/api/openapi.json", "/api/hardware"):
            assert client.get(path).status_code == 401, path
        assert client.post("/api/validate", json={}).status_code == 401
        page = client.get("/wizard/1", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert client.get("/api/presets", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/presets", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/static/studio.css").status_code == 200  # assets carry no data


def test_login_sets_a_cookie_and_rejects_a_wrong_token(tmp_path):
    with make_client(tmp_path / "s", token="s3cret") as client:
        assert client.post("/login", data={"token": "nope"}).status_code == 401
        response = client.post("/login", data={"token": "s3cret", "next": "//evil.example/x"}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert "httponly" in response.headers["set-cookie"].lower()
        assert client.get("/wizard/3").status_code == 200
        assert client.get("/api/jobs").status_code == 200


def test_without_token_only_loopback_hosts_and_same_origin_writes(client):
    assert client.get("/api/presets", headers={"host": "evil.example"}).status_code == 403
    assert client.get("/api/presets", headers={"host": "127.0.0.1:7860"}).status_code == 200
    refused = client.post("/api/validate", json={}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403


# ---------------------------------------------------------------- configure

def test_pages_are_served_and_bounded(client):
    assert client.get("/", follow_redirects=False).headers["location"] == "/wizard/1"
    for path in ("/wizard/1", "/wizard/7", "/jobs", "/jobs/3", "/login"):
        response = client.get(path)
        assert response.status_code == 200 and "<html" in response.text, path
    assert client.get("/wizard/8").status_code == 404
    assert client.get("/docs").status_code == 404, "no page that loads assets from a CDN"


def test_presets_steps_explain_and_openapi(client):
    presets = client.get("/api/presets").json()
    assert {"tiny", "llama3_8b"} <= {o["name"] for o in presets["model"]}
    assert {"lora", "dora", "pissa", "rslora"} <= {o["name"] for o in presets["peft"]}
    known = {m["hub_id"]: m for m in presets["known_models"]}  # the catalogue, for the model field's suggestions
    assert known["meta-llama/Llama-3.1-8B-Instruct"]["total_parameters"] == 8_030_261_248
    steps = client.get("/api/steps").json()
    assert [s["step"] for s in steps] == list(range(1, 8))
    batch = next(f for s in steps for f in s["fields"] if f["key"] == "training.micro_batch_size")
    assert batch["range"].startswith("1–1024") and batch["description"] and batch["kind"] == "int"
    scheduler = next(f for s in steps for f in s["fields"] if f["key"] == "optim.lr_scheduler")
    assert scheduler["kind"] == "choice" and "cosine" in scheduler["choices"]
    assert client.get("/api/explain/peft.r").json()["field"]["range"] == "1–256"
    assert client.get("/api/explain/training.micro_batch_sise").status_code == 400
    paths = client.get("/api/openapi.json").json()["paths"]
    for path in ("/api/presets", "/api/hardware", "/api/explain/{key}", "/api/validate", "/api/estimate",
                 "/api/datasets", "/api/preview", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel",
                 "/api/jobs/{job_id}/resume", "/api/jobs/{job_id}/metrics", "/api/jobs/{job_id}/events"):
        assert path in paths, path


def test_validate_uses_the_cli_schema_and_names_the_key(client):
    checked = client.post("/api/validate", json={"groups": {"model": "tiny"},
                                                 "values": {"training.micro_batch_size": "0"}}).json()
    assert not checked["ok"]
    problem, = checked["problems"]
    assert problem["where"] == "training.micro_batch_size" and "1–1024" in problem["fix"]
    good = client.post("/api/validate", json={"groups": {"model": "tiny"}, "values": {"training.micro_batch_size": 2}}).json()
    assert good["ok"] and good["plan"]["config"]["training"]["micro_batch_size"] == 2
    assert good["command"] == "peftstudio train model=tiny training.micro_batch_size=2"
    assert yaml.safe_load(good["yaml"]) == {"defaults": [{"model": "tiny"}], "training": {"micro_batch_size": 2}}


def test_estimate_is_the_cli_estimator_on_the_plan(client):
    from peftstudio import api
    from peftstudio.plan.memory import estimate_memory

    totals = {}
    for micro in (2, 8):
        state = {"groups": {"model": "tiny"}, "values": {"training.micro_batch_size": micro}}
        memory = client.post("/api/estimate", json={"state": state}).json()["memory"]
        expected = estimate_memory(api.plan(["model=tiny", f"training.micro_batch_size={micro}"], hardware=CPU).config)
        assert memory["total_bytes"] == expected.total_bytes and memory["fits"] is True
        totals[micro] = memory["total_bytes"]
    assert totals[8] > totals[2]
    big = client.post("/api/estimate", json={"state": {"groups": {"model": "llama3_8b"},
                                                       "values": {"training.micro_batch_size": 64}}}).json()["memory"]
    assert big["fits"] is False and big["device_bytes"] == CPU.ram_bytes
    presets = {o["name"]: o for o in client.get("/api/presets").json()["model"]}
    assert presets["llama3_8b"]["memory"]["total_parameters"] > 8e9 > presets["gemma3_1b"]["memory"]["total_parameters"]


def test_cloud_targets_and_their_cost_come_from_the_price_file(client):
    targets = client.get("/api/hardware").json()["providers"]
    assert {"runpod", "lambda", "vast"} <= {t["provider"] for t in targets}
    h100 = next(t for t in targets if t["provider"] == "runpod" and t["gpu"] == "H100")
    assert h100["memory_bytes"] == 80 * GIB
    state = {"groups": {"model": "llama3_8b"}}
    on_h100 = client.post("/api/estimate", json={"state": state, "target": {"provider": "runpod", "gpu": "H100"}}).json()
    assert on_h100["memory"]["fits"] is True and on_h100["memory"]["device_bytes"] == 80 * GIB
    cost = on_h100["cost"]
    assert cost["hours"] > 0 and cost["cost_low"] == pytest.approx(cost["hours"] * h100["price_low"])
    on_t4 = client.post("/api/estimate", json={"state": state, "target": {"provider": "vast", "gpu": "T4"}}).json()
    assert on_t4["memory"]["fits"] is False and on_t4["cost"]["fits"] is False
    local = client.post("/api/estimate", json={"state": TINY}).json()["cost"]
    assert local["hours"] > 0 and local["cost_low"] == 0.0
    unknown = client.post("/api/estimate", json={"state": state, "target": {"provider": "nope", "gpu": "T4"}})
    assert unknown.status_code == 400 and unknown.json()["problems"][0]["where"] == "compute"


def test_the_job_yaml_composes_to_the_same_config_as_the_overrides(client, tmp_path):
    from peftstudio import api
    from peftstudio.studio.wizard import config_yaml

    state = {"groups": {"model": "tiny", "peft": "dora"},
             "values": {"peft.r": 8, "optim.lr_scheduler": "linear", "peft.target_modules": "q_proj, v_proj"}}
    checked = client.post("/api/validate", json=state).json()
    assert checked["ok"], checked["problems"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_yaml(checked["overrides"]))
    from_file = api.plan([], config_file, hardware=CPU).config
    assert from_file.model_dump() == api.plan(checked["overrides"], hardware=CPU).config.model_dump()
    assert from_file.peft.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("values, where, words", [
    ({"model.name_or_path": "${oc.env:HOME}"}, "model.name_or_path", "interpolations"),
    ({"training.output_dir": "/etc"}, "training.output_dir", "set by the studio"),
    ({"data.path": "/etc/passwd"}, "data.path", "set by the studio"),
    ({"data.chat_template": "/etc/passwd"}, "data.chat_template", "template files"),
    ({"model.name_or_path": "../../secret"}, "model.name_or_path", "not a hub id (org/name) nor a model directory"),
    ({"model.name_or_path": "https://example.com/model"}, "model.name_or_path", "not a hub id (org/name) nor a model directory"),
    ({"training.nope": 1}, "training.nope", "not a config key"),
    ({"peft.r": "8,16"}, "peft.r", "sweep"),
])
def test_unsafe_or_unknown_values_are_refused(client, values, where, words):
    checked = client.post("/api/validate", json={"values": values}).json()
    assert not checked["ok"]
    assert any(p["where"] == where and words in p["message"] for p in checked["problems"]), checked["problems"]


def test_yaml_is_loaded_safely(client, tmp_path):
    marker = tmp_path / "pwned"
    payload = f"training: !!python/object/apply:os.system ['touch {marker}']\n"
    checked = client.post("/api/validate", json={"yaml_text": payload}).json()
    assert not checked["ok"] and "invalid YAML" in checked["problems"][0]["message"]
    assert not marker.exists()
    control = client.post("/api/estimate", json={"state": {"yaml_text": "\u001f"}})  # found by the API fuzz test
    assert control.status_code in (200, 422) and "special characters" in control.text, control.text
    good = client.post("/api/validate", json={"yaml_text": "defaults:\n- model: tiny\npeft:\n  r: 4\n"}).json()
    assert good["ok"] and good["plan"]["config"]["peft"]["r"] == 4


def test_trust_remote_code_is_off_unless_ticked_and_warned(client):
    plain = client.post("/api/validate", json=TINY).json()
    assert plain["plan"]["config"]["model"]["trust_remote_code"] is False
    assert not any("trust_remote_code" in w for w in plain["warnings"])
    ticked = client.post("/api/validate", json={**TINY, "values": {"model.trust_remote_code": True}}).json()
    assert ticked["plan"]["config"]["model"]["trust_remote_code"] is True
    assert any("trust_remote_code" in w for w in ticked["warnings"])


# ---------------------------------------------------------------- uploads

GOOD_ROWS = "".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) + "\n" for i in range(30))


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a\x00b.jsonl", "..\\..\\evil.jsonl", "x/../../../y.json"])
def test_upload_names_are_never_paths(client, tmp_path, name):
    response = client.post("/api/datasets", params={"name": name}, content=GOOD_ROWS.encode())
    assert response.status_code == 201, response.text
    info = response.json()
    data_dir = client.app.state.studio.settings.data_dir
    stored = list((data_dir / "datasets").glob(f"{info['id']}.*"))
    assert {p.name for p in stored} == {f"{info['id']}.jsonl", f"{info['id']}.meta.json"}
    assert "/" not in info["name"] and "\x00" not in info["name"] and ".." not in info["name"].replace("...", "")[:2]
    assert not (tmp_path / "x").exists() and not (data_dir.parent / "x").exists()


def test_upload_size_limit_is_enforced_while_streaming(tmp_path):
    with make_client(tmp_path / "s", max_upload_bytes=1000) as client:
        def chunks():  # no content-length: the limit must stop the stream itself
            for _ in range(50):
                yield b"x" * 100
        response = client.post("/api/datasets", params={"name": "big.jsonl"}, content=chunks())
        assert response.status_code == 413
        declared = client.post("/api/datasets", params={"name": "big.jsonl"}, content=b"y" * 5000)
        assert declared.status_code == 413
        assert list((tmp_path / "s" / "datasets").iterdir()) == []


def test_content_type_is_not_trusted(client):
    parquet_magic = client.post("/api/datasets", params={"name": "rows.jsonl"}, content=b"PAR1" + b"\0" * 20,
                                headers={"content-type": "application/json"})
    assert parquet_magic.json()["kind"] == "parquet"
    array = client.post("/api/datasets", params={"name": "rows.csv"}, content=b'[{"text": "a"}]',
                        headers={"content-type": "text/csv"})
    assert array.json()["kind"] == "json"


def test_preview_shows_format_masking_and_file_line_errors(client, model_cache):
    good = client.post("/api/datasets", params={"name": "mine.jsonl"}, content=GOOD_ROWS.encode()).json()
    shown = client.post("/api/preview", json={**TINY, "dataset": good["id"]}).json()
    assert shown["ok"] and shown["format"] == "instruction" and shown["rows"] == 30
    pieces = shown["samples"][0]
    assert [p["trained"] for p in pieces] == [False, True] and "Say" in pieces[0]["text"]
    bad = client.post("/api/datasets", params={"name": "bad.jsonl"},
                      content=(GOOD_ROWS + '{"instruction": "x"\n').encode()).json()
    shown = client.post("/api/preview", json={**TINY, "dataset": bad["id"]}).json()
    assert not shown["ok"]
    assert any(p["where"] == "bad.jsonl:31" for p in shown["problems"]), shown["problems"]
    assert client.post("/api/preview", json={**TINY, "dataset": "0" * 32}).json()["problems"][0]["where"] == "dataset"


def test_preview_marks_what_max_seq_length_cuts(client, model_cache):
    rows = "".join(json.dumps({"instruction": "Count", "output": " ".join(["one two three"] * 20)}) + "\n" for _ in range(20))
    info = client.post("/api/datasets", params={"name": "long.jsonl"}, content=rows.encode()).json()
    state = {**TINY, "values": {"training.max_seq_length": 24}, "dataset": info["id"]}
    shown = client.post("/api/preview", json=state).json()
    assert shown["ok"], shown["problems"]
    states = [(p["trained"], p["truncated"]) for p in shown["samples"][0]]
    assert states == [(False, False), (True, False), (False, True)]


def test_columns_are_mapped_as_on_the_command_line(client, model_cache):
    rows = "".join(json.dumps({"question": f"Say {i}", "answer": str(i)}) + "\n" for i in range(20))
    info = client.post("/api/datasets", params={"name": "qa.jsonl"}, content=rows.encode()).json()
    unmapped = client.post("/api/preview", json={**TINY, "dataset": info["id"]}).json()
    assert not unmapped["ok"] and unmapped["problems"][0]["where"].startswith("qa.jsonl")
    mapped = {**TINY, "dataset": info["id"], "values": {"data.columns": "{prompt: question, completion: answer}"}}
    shown = client.post("/api/preview", json=mapped).json()
    assert shown["ok"] and shown["format"] == "prompt_completion", shown


def test_csv_and_parquet_uploads_preview_like_jsonl(client, model_cache, tmp_path):
    import pandas

    frame = pandas.DataFrame({"instruction": [f"Say {i}" for i in range(20)], "output": [str(i) for i in range(20)]})
    frame.to_parquet(tmp_path / "rows.parquet")
    uploads = {"rows.csv": frame.to_csv(index=False).encode(), "rows.parquet": (tmp_path / "rows.parquet").read_bytes()}
    for name, content in uploads.items():
        info = client.post("/api/datasets", params={"name": name}, content=content).json()
        assert info["kind"] == name.rsplit(".", 1)[1]
        shown = client.post("/api/preview", json={**TINY, "dataset": info["id"]}).json()
        assert shown["ok"] and shown["format"] == "instruction" and shown["rows"] == 20, shown
    broken = client.post("/api/datasets", params={"name": "broken.csv"}, content=b"instruction,output\nSay,1\nSay 2,\n").json()
    shown = client.post("/api/preview", json={**TINY, "dataset": broken["id"]}).json()
    assert not shown["ok"] and any(p["where"].startswith("broken.csv:") for p in shown["problems"]), shown


# ---------------------------------------------------------------- jobs

def test_bad_state_is_not_queued(client):
    response = client.post("/api/jobs", json={"state": {"values": {"peft.r": 0}}})
    assert response.status_code == 400
    assert response.json()["detail"]["problems"][0]["where"] == "peft.r"
    assert client.get("/api/jobs").json() == []


def test_only_the_cli_knows_the_studio():
    """Deleting studio/ must not touch training: nothing but the command that starts it refers to it."""
    package = Path(__file__).parents[2] / "src" / "peftstudio"
    users = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
             if "studio" not in p.relative_to(package).parts[:1] and "peftstudio.studio" in p.read_text(encoding="utf-8")]
    assert users == ["cli/tool_commands.py"]


def test_one_studio_per_data_dir(tmp_path):
    from peftstudio.errors import UserError
    from peftstudio.studio.server import hold_data_dir

    held = hold_data_dir(tmp_path)
    with pytest.raises(UserError, match="another studio"):
        hold_data_dir(tmp_path)
    held.close()
    hold_data_dir(tmp_path).close()


def test_no_asset_comes_from_the_internet():
    import re

    static = Path(__file__).parents[2] / "src" / "peftstudio" / "studio" / "static"
    for path in static.iterdir():
        text = path.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")  # a namespace, not a fetch
        assert not re.search(r"https?://|//cdn|@import", text), path.name


@pytest.mark.parametrize("kind", HOSTILE_YAML)
def test_the_studio_refuses_the_same_files_with_the_same_message(client, kind):
    text, words = HOSTILE_YAML[kind]
    checked = client.post("/api/validate", json={"yaml_text": text}).json()
    assert not checked["ok"] and words in checked["problems"][0]["message"]


def test_a_local_dir_that_is_not_a_model_gets_4xx_and_the_same_answer_as_a_missing_one(client, tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    answers = []
    for path in (not_a_model, tmp_path / "missing"):
        response = client.post("/api/jobs", json={"state": {"groups": {"model": "tiny"},
                                                            "values": {"model.name_or_path": str(path)}}})
        assert response.status_code == 400, response.text
        problem = response.json()["detail"]["problems"][0]
        assert problem["where"] == "model.name_or_path" and "no config.json / tokenizer files" in problem["message"]
        answers.append(problem["message"].replace(str(path), "PATH"))
    assert answers[0] == answers[1], "the answer must not tell an existing directory from a missing one"


def test_a_short_studio_token_is_refused_and_generate_makes_a_long_one():
    from peftstudio.errors import UserError
    from peftstudio.studio.auth import MIN_TOKEN_LENGTH, studio_token

    with pytest.raises(UserError) as caught:
        studio_token("x")
    assert caught.value.exit_code == 2 and "at least 16" in caught.value.render() and "--token generate" in caught.value.render()
    token, generated = studio_token("generate")
    assert generated and len(token) >= MIN_TOKEN_LENGTH and studio_token("generate")[0] != token
    assert studio_token("a-long-enough-token!") == ("a-long-enough-token!", False)


def test_wrong_tokens_make_a_client_wait_longer_each_time(tmp_path):
    token = "right-token-of-16-chars"
    with make_client(tmp_path / "s", token=token) as client:
        now = [1000.0]
        client.app.state.failed_logins._clock = lambda: now[0]
        for _ in range(5):  # a few typos cost nothing
            assert client.post("/login", data={"token": "wrong"}).status_code == 401
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        waiting = client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
        assert waiting.status_code == 429 and waiting.headers["Retry-After"] == "1", "even the right token waits"
        assert client.post("/login", data={"token": token}).status_code == 429
        now[0] += 1.5
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).headers["Retry-After"] == "2"
        now[0] += 2.5
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.post("/login", data={"token": "wrong"}).status_code == 401, "a right token cleared the count"



def test_the_studio_never_echoes_its_own_environment(client, monkeypatch):
    monkeypatch.setenv("STUDIO_SIDE_SECRET", "studio-s3cr3t-value")
    for value in ("${oc.env:STUDIO_SIDE_SECRET}", "http://u:${oc.env:STUDIO_SIDE_SECRET}@h"):
        checked = client.post("/api/validate", json={**TINY, "values": {**TINY["values"], "logging.wandb_project": value}})
        assert not checked.json()["ok"] and "studio-s3cr3t-value" not in checked.text
    pasted = client.post("/api/validate", json={"yaml_text": "defaults:\n- model: tiny\nlogging:\n  wandb_project: "
                                                             "${oc.env:STUDIO_SIDE_SECRET}\n"})
    assert "studio-s3cr3t-value" not in pasted.text
    masked = client.post("/api/validate", json={**TINY, "values": {**TINY["values"],
                                                                   "logging.wandb_project": "http://u:pw-s3cr3t@h/x"}})
    assert masked.json()["ok"] and "pw-s3cr3t" not in masked.text and "http://u:***@h/x" in masked.text


# ---------------------------------------------------------------- image-text uploads (issue 14)

def _zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        for name, target in (links or {}).items():  # a symlink entry, as `zip -y` writes it
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, target)
    return buffer.getvalue()


def _png(colour: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_rows(paths: list[str]) -> bytes:
    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "path": p}, {"type": "text", "text": "Colour?"}]},
                          {"role": "assistant", "content": "red"}]} for p in paths]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


VISION = {"groups": {"model": "tiny_vision"}, "values": {}}


def test_zip_upload_previews_thumbnails_and_image_problems_with_file_line(client, model_cache):
    good = _zip({"frames/data.jsonl": _image_rows(["img/a.png"] * 10), "frames/img/a.png": _png("red")})
    info = client.post("/api/datasets", params={"name": "frames.zip"}, content=good).json()
    assert info["kind"] == "zip" and info["data_file"] == "frames/data.jsonl"
    shown = client.post("/api/preview", json={**VISION, "dataset": info["id"]}).json()
    assert shown["ok"], shown["problems"]
    assert shown["rows"] == 10 and all(t[0].startswith("data:image/png;base64,") for t in shown["thumbnails"])
    bad = _zip({"data.jsonl": _image_rows(["a.png", "gone.png", "broken.png"] + ["a.png"] * 7), "a.png": _png("red"),
                "broken.png": b"\x89PNG broken"})
    info = client.post("/api/datasets", params={"name": "bad.zip"}, content=bad).json()
    shown = client.post("/api/preview", json={**VISION, "dataset": info["id"]}).json()
    where = {p["where"] for p in shown["problems"]}
    assert not shown["ok"] and {"bad.zip/data.jsonl:2", "bad.zip/data.jsonl:3"} <= where, shown["problems"]
    assert not any("datasets/" in p["message"] for p in shown["problems"]), "the stored path is never shown"


@pytest.mark.parametrize("entries,links", [({"../evil.jsonl": b"{}"}, None), ({"/abs/evil.jsonl": b"{}"}, None),
                                           ({"a/../../evil.jsonl": b"{}"}, None), ({"d.jsonl": b"{}"}, {"l.png": "/etc/passwd"}),
                                           ({"C:/evil.jsonl": b"{}"}, None), ({"a.jsonl": b"{}", "b.jsonl": b"{}"}, None)])
def test_zip_uploads_never_write_outside_the_data_dir(client, entries, links):
    data_dir = client.app.state.studio.settings.data_dir
    response = client.post("/api/datasets", params={"name": "x.zip"}, content=_zip(entries, links))
    assert response.status_code == 400, response.text
    assert list((data_dir / "datasets").iterdir()) == [], "nothing of a refused zip is kept"
    assert not (data_dir / "evil.jsonl").exists() and not (data_dir.parent / "evil.jsonl").exists()


@pytest.mark.parametrize("route", ["/api/preview", "/api/validate"])
def test_uploaded_data_cannot_name_images_outside_the_upload(client, model_cache, tmp_path, monkeypatch, route):
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png("blue"))
    opened = []
    real_load = images.load_image
    monkeypatch.setattr(images, "load_image", lambda ref: opened.append(ref.value) or real_load(ref))
    rows = _image_rows([str(outside)] * 9 + ["http://127.0.0.1:9/fetched.png"])
    info = client.post("/api/datasets", params={"name": "d.jsonl"}, content=rows).json()
    shown = client.post(route, json={**VISION, "dataset": info["id"]}).json()
    messages = [p["message"] for p in shown["problems"]]
    assert not shown["ok"] and all("is not a file inside the upload" in m for m in messages), messages
    assert any("fetched.png" in m for m in messages)
    assert opened == [], "nothing outside the upload is opened or fetched, not even to check it"
    assert "thumbnails" not in shown
