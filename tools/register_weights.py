"""Register the weight files in ``weights/`` in the model registry (``defocus_cli/models.json``).

For each ``weights/<name>.safetensors`` it reads the ``"arch"`` safetensors metadata (required; also
``license``, ``summary``/``notes`` and ``config`` if present), computes the sha256 and size, derives a
deterministic 40-hex revision from (repo id, file name, sha256), and writes the entry. Fields already in
the registry that do not come from the file (licence, summary, card, config, repo id) are kept, so a
hand-edited summary survives re-registration. Entries without a file in ``weights/`` are kept unless
``--prune``. A model card ``weights/<name>.md`` is linked when present.

Usage (from the repository root)::

    python tools/register_weights.py                      # update defocus_cli/models.json
    python tools/register_weights.py --default deblur=ifan --default map=defocusgan-map
    python tools/register_weights.py --check              # exit 1 if the registry is out of date (CI)

OpenVINO IR (``weights/<name>.openvino-<fp32|int8>.xml/.bin``, written by ``tools/export_openvino.py``) is
registered in the same entry's ``openvino`` field: both files of each IR pinned by sha256, and the
``source_sha256`` and quality-gate numbers read from the IR's ``rt_info`` (plain XML, no openvino needed).
The measured fields (``auto`` rule per CPU class, ``bytes_per_pixel``; written by
``bench/bench_backends.py --record``) are kept. An IR exported from other weights than the entry's file
is still registered as it is (the loader then refuses it); a warning names the command that regenerates it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from defocus_cli import registry  # noqa: E402
from defocus_cli.fetch import sha256_file  # noqa: E402
from defocus_cli.weights import read_metadata  # noqa: E402

DEFAULT_ORG = "defocus-cli"
DEFAULT_LICENSE = "MIT"


def revision_for(repo_id: str, filename: str, sha256: str) -> str:
    """Deterministic 40-hex revision of one file's content (what its Hub commit will be pinned as)."""
    return hashlib.sha1(f"defocus-cli weights\n{repo_id}\n{filename}\n{sha256}".encode()).hexdigest()


IR_KINDS = ("fp32", "int8")
KEPT_OPENVINO_KEYS = ("auto", "bytes_per_pixel")


def ir_rt_info(xml: Path) -> dict[str, str]:
    """The ``defocus/*`` entries of an IR's ``rt_info`` (``{"source_sha256": ..., "gate": json, ...}``)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(xml).getroot()
    node = root.find("rt_info/defocus")
    if node is None:
        return {}
    return {child.tag: child.get("value", "") for child in node}


def ir_traits(path: Path) -> dict[str, Any]:
    """The network's traits the OpenVINO backend runs with (``defocus_cli.backends.openvino.TRAIT_KEYS``), so that
    it needs no torch network: the arch class's ``multiple_of``, ``receptive_field`` and ``bytes_per_pixel`` and
    the file's ``tone_lock_sigma`` metadata (what ``runtime.engine_traits`` reads from the loaded network)."""
    from defocus_cli.weights import tone_lock_sigma_from_metadata

    meta = read_metadata(path)
    cls = registry.load_class(str(meta.get("arch")))
    return {"multiple_of": int(cls.multiple_of), "receptive_field": int(cls.receptive_field),
            "bytes_per_pixel": cls.bytes_per_pixel, "tone_lock_sigma": tone_lock_sigma_from_metadata(meta)}


def openvino_for(path: Path, old: dict[str, Any] | None) -> dict[str, Any]:
    """The ``openvino`` field of ``path``'s entry from the IR files beside it ({} when there are none)."""
    name = path.stem
    files: dict[str, Any] = {}
    gate: dict[str, Any] = {}
    sources = set()
    for ir in IR_KINDS:
        xml, bin_ = path.parent / f"{name}.openvino-{ir}.xml", path.parent / f"{name}.openvino-{ir}.bin"
        if not (xml.is_file() and bin_.is_file()):
            continue
        info = ir_rt_info(xml)
        sources.add(info.get("source_sha256", ""))
        gate.update(json.loads(info.get("gate") or "{}"))
        files[ir] = {"xml": xml.name, "xml_sha256": sha256_file(xml, use_memo=False),
                     "bin": bin_.name, "bin_sha256": sha256_file(bin_, use_memo=False),
                     "size": xml.stat().st_size + bin_.stat().st_size}
    if not files:
        return {}
    if len(sources) != 1 or not all(sources):
        raise SystemExit(f"{path.parent}/{name}.openvino-*.xml: IR files from different or unknown weights "
                         f"({sorted(sources)}); re-run python tools/export_openvino.py --model {name}")
    out: dict[str, Any] = {"source_sha256": sources.pop(), "files": files, "gate": gate,
                           "traits": ir_traits(path)}
    for key in KEPT_OPENVINO_KEYS:
        if (old or {}).get(key):
            out[key] = old[key]  # type: ignore[index]
    return out


def entry_for(path: Path, old: dict[str, Any] | None, org: str) -> dict[str, Any]:
    """Registry entry (JSON dict) for one weight file, keeping hand-written fields of ``old``."""
    meta = read_metadata(path)
    arch = meta.get("arch")
    if arch not in registry.ARCHS:
        raise SystemExit(f"{path}: metadata 'arch' is {arch!r}; expected one of {', '.join(registry.ARCHS)}")
    old = old or {}
    name = path.stem
    repo_id = old.get("repo_id") or f"{org}/{name}"
    sha = sha256_file(path, use_memo=False)
    card = f"{name}.md" if (path.parent / f"{name}.md").is_file() else old.get("card", "")
    config = old.get("config")
    if config is None and meta.get("config"):
        config = json.loads(meta["config"])
    entry = {
        "name": name,
        "task": registry.ARCH_TASKS[arch],
        "arch": arch,
        "repo_id": repo_id,
        "filename": path.name,
        "revision": revision_for(repo_id, path.name, sha),
        "sha256": sha,
        "size": path.stat().st_size,
        "license": old.get("license") or meta.get("license") or DEFAULT_LICENSE,
        "summary": old.get("summary") or meta.get("summary") or meta.get("notes", ""),
        "card": card,
        "config": config or {},
    }
    if old.get("experimental"):  # hand-written: why the model is not offered by default
        entry["experimental"] = old["experimental"]
    ov_entry = openvino_for(path, old.get("openvino"))
    if ov_entry:
        if ov_entry["source_sha256"] != sha:
            print(f"warning: the OpenVINO IR of {name} was exported from other weights "
                  f"({ov_entry['source_sha256'][:12]}…, file {sha[:12]}…); it will not be used until you run "
                  f"python tools/export_openvino.py --model {name}", file=sys.stderr)
        entry["openvino"] = ov_entry
    registry.spec_from_dict(entry)  # validate
    return entry


def build_registry(weights_dir: Path, current: dict[str, Any], org: str, defaults: dict[str, str],
                   prune: bool) -> dict[str, Any]:
    """The new registry document from the files in ``weights_dir`` and the ``current`` document."""
    old = {m["name"]: m for m in current.get("models", [])}
    files = sorted(weights_dir.glob("*.safetensors"))
    new = {p.stem: entry_for(p, old.get(p.stem), org) for p in files}
    if not prune:
        for name, m in old.items():
            new.setdefault(name, m)
    merged_defaults = {**current.get("defaults", {}), **defaults}
    merged_defaults = {t: n for t, n in merged_defaults.items() if n in new and not new[n].get("experimental")}
    return {"defaults": dict(sorted(merged_defaults.items())), "models": [new[k] for k in sorted(new)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights-dir", type=Path, default=ROOT / "weights")
    ap.add_argument("--registry", type=Path, default=registry.REGISTRY_FILE)
    ap.add_argument("--org", default=DEFAULT_ORG, help="Hub organisation of new repos (default %(default)s)")
    ap.add_argument("--default", action="append", default=[], metavar="TASK=NAME",
                    help="default model of a task, e.g. deblur=ifan (repeatable)")
    ap.add_argument("--prune", action="store_true", help="drop entries whose file is not in the weights folder")
    ap.add_argument("--check", action="store_true", help="only report; exit 1 if the registry is out of date")
    args = ap.parse_args(argv)

    defaults = {}
    for item in args.default:
        task, _, name = item.partition("=")
        if task not in registry.TASKS or not name:
            ap.error(f"--default {item!r}: expected TASK=NAME with TASK in {registry.TASKS}")
        defaults[task] = name
    current = json.loads(args.registry.read_text()) if args.registry.is_file() else {}
    doc = build_registry(args.weights_dir, current, args.org, defaults, args.prune)
    text = json.dumps(doc, indent=2) + "\n"
    old_text = args.registry.read_text() if args.registry.is_file() else ""
    if args.check:
        if text != old_text:
            print(f"{args.registry} is out of date; run python tools/register_weights.py", file=sys.stderr)
            return 1
        print(f"{args.registry} is up to date ({len(doc['models'])} models)")
        return 0
    args.registry.write_text(text)
    for m in doc["models"]:
        print(f"{m['name']:<16} {m['task']:<7} {m['arch']:<15} {m['size']:>11} B  sha256 {m['sha256'][:16]}…  "
              f"rev {m['revision'][:8]}")
    print(f"wrote {args.registry} ({len(doc['models'])} models, defaults {doc['defaults']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
