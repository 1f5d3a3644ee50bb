"""``launch/slurm.sbatch`` run as a batch job on two nodes by stand-ins for ``scontrol``, ``srun``
and ``accelerate``: the ``accelerate launch`` command each node would run."""
import os
import subprocess

from conftest import REPO

STAND_INS = {
    # the hosts of the job's node list, written one at a time: a reader that stops after the first
    # must not fail the job
    "bin/scontrol": """#!/bin/bash
[[ "$*" == "show hostnames gpu-[07-08]" ]] || exit 1
echo gpu-07; sleep 0.1; echo gpu-08
""",
    # one task per node, with the variables srun sets for it, one node after the other
    "bin/srun": """#!/bin/bash
while [[ $1 == -* ]]; do shift; done
node=0
for host in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
  SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 SLURMD_NODENAME=$host "$@" || exit
  node=$((node + 1))
done
""",
    # records its arguments, NUL-separated, in calls/<host>
    ".venv/bin/accelerate": """#!/bin/bash
printf '%s\\0' "$@" > "calls/$SLURMD_NODENAME"
""",
}


def test_each_node_launches_its_machine_rank_with_the_arguments_as_given(tmp_path):
    for name, text in STAND_INS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    (tmp_path / "calls").mkdir()
    overrides = ["train.epochs=50", "tracking.tags=[two words, $HOME]", "tracking.run_name=it's *"]
    env = {key: value for key, value in os.environ.items() if key != "MAIN_PORT"}
    env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu-[07-08]",
               SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4", SLURM_JOB_ID="4242")
    subprocess.run(["bash", REPO / "launch" / "slurm.sbatch", "configs/vivid.yaml", *overrides],
                   cwd=tmp_path, env=env, check=True, timeout=30)
    for rank, host in enumerate(["gpu-07", "gpu-08"]):
        assert (tmp_path / "calls" / host).read_text().split("\0")[:-1] == [
            "launch", "--config_file", "launch/multi-node.yaml",
            "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "8",
            "--main_process_ip", "gpu-07", "--main_process_port", "29500",
            "-m", "colorize", "train", "--config", "configs/vivid.yaml", "run.name=slurm-4242", *overrides]
