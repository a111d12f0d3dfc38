"""launch: SkyPilot's own parser loads the task for each provider, when it is installed (make
test puts it in .venv-sky; pip would downgrade this venv's click)."""

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKY_PYTHON = os.environ.get("PEFTSTUDIO_SKY_PYTHON") or str(ROOT / ".venv-sky/bin/python")


@pytest.mark.skipif(not Path(SKY_PYTHON).is_file(),
                    reason=f"SkyPilot's parser not installed at {SKY_PYTHON} (make test creates .venv-sky)")
def test_skypilot_parses_every_task(tasks, tmp_path):
    paths = [str(r.task_path) for r in tasks[0].values()]
    script = textwrap.dedent("""
        import json, sys
        import sky
        out = {}
        for path in sys.argv[1:]:
            task = sky.Task.from_yaml(path)
            (resources,) = task.resources
            out[path] = {"cloud": str(resources.cloud), "accelerators": resources.accelerators,
                         "spot": resources.use_spot, "mounts": sorted(task.file_mounts or {}),
                         "storage": sorted(task.storage_mounts or {}),
                         "num_nodes": task.num_nodes}
        print(json.dumps(out))
    """)
    result = subprocess.run([SKY_PYTHON, "-c", script, *paths], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    runpod, vast, local, nodes = (parsed[p] for p in paths)
    assert nodes["num_nodes"] == 2 and runpod["num_nodes"] == 1 and nodes["storage"] == ["/peftstudio/state"]
    assert runpod["cloud"] == "RunPod" and not runpod["spot"]
    assert vast["cloud"] == "Vast" and vast["spot"] and vast["accelerators"] == {"RTX4090": 1}
    assert vast["storage"] == ["/peftstudio/state"]
    assert local["cloud"] == "Kubernetes"
