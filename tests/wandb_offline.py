"""Read back what an offline W&B run wrote: the records of its ``run-<id>.wandb`` file (a
LevelDB-style log of protobuf records) and its media files."""
import json
import struct
from pathlib import Path
from typing import Dict, Iterator, List

from wandb.proto import wandb_internal_pb2

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    assert data[:4] == b":W&B", "not a W&B run file"
    position, pending = _HEADER, b""
    while position + _HEADER <= len(data):
        space = _BLOCK - position % _BLOCK
        if space < _HEADER:  # the rest of a block too small for a header is padding
            position += space
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + _HEADER])
        chunk = data[position + _HEADER:position + _HEADER + length]
        position += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
        else:
            position += space - _HEADER - length  # zero padding up to the block's end


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


class OfflineRun:
    def __init__(self, directory: Path):
        self.directory = directory
        records = []
        for payload in _payloads(next(directory.glob("run-*.wandb")).read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
        self.records = records

    @property
    def run_id(self) -> str:
        return next(r.run.run_id for r in self.records if r.WhichOneof("record_type") == "run")

    @property
    def history(self) -> List[Dict]:
        return [{_key(i): json.loads(i.value_json) for i in r.history.item}
                for r in self.records if r.WhichOneof("record_type") == "history"]

    @property
    def summary(self) -> Dict:
        values = {}
        for r in self.records:
            if r.WhichOneof("record_type") == "summary":
                values.update({_key(i): json.loads(i.value_json) for i in r.summary.update})
        return values

    @property
    def step_metrics(self) -> Dict[str, str]:
        """The x axis of each ``define_metric`` name or glob; empty for the default step."""
        return {r.metric.name or r.metric.glob_name: r.metric.step_metric
                for r in self.records if r.WhichOneof("record_type") == "metric"}

    def media(self, pattern: str) -> List[Path]:
        return sorted((self.directory / "files" / "media").rglob(pattern))


def offline_runs(run_dir: Path) -> List[OfflineRun]:
    return [OfflineRun(d) for d in sorted((run_dir / "wandb").glob("offline-run-*"))]
