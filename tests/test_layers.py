"""The layers' import rules: imports point down only (scenarios -> guests -> hv -> sim), and
the Service VM's software reaches the hypervisor only through what real Service VM software
has: the public ABI (hv/public.py) and its port (hv/service_vm_port.py)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE_VM_MAY_IMPORT = {"hv.public", "hv.service_vm_port"}


FOLDERS = ("sim", "hv", "guests", "scenarios")


def raw_imports(path: Path) -> set[str]:
    """Every module `path` imports, by full dotted name as written."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    """The same, with the package's name taken off (`from acrn_sim.hv import x` gives hv.x):
    the folders are the layers."""
    return {m.removeprefix("acrn_sim.") for m in raw_imports(path)}


def of_hv(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "hv" or m.startswith("hv.")}


def hv_imports(folder: str) -> dict[str, set[str]]:
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        hv = of_hv(imports_of(path))
        if hv:
            out[str(path.relative_to(ROOT))] = hv
    return out


def violations(imports: dict[str, set[str]]) -> list[str]:
    """Imports of hv modules other than the allowed ones (a module's own `from hv.public
    import X` names show up as hv.public.X: those are fine)."""
    bad = []
    for path, mods in imports.items():
        for m in sorted(mods):
            if not any(m == ok or m.startswith(ok + ".") for ok in SERVICE_VM_MAY_IMPORT):
                if m != "hv":  # `from acrn_sim.hv import public` shows as hv and hv.public
                    bad.append(f"{path}: {m}")
    return bad


def test_guests_import_only_the_public_abi_and_the_service_vm_port():
    assert violations(hv_imports("guests")) == []


def test_the_rule_catches_an_import_from_the_vcpu_module(tmp_path):
    """An import of hv.guest.vcpu added to the device model breaks the rule."""
    dm = (ROOT / "guests/service_vm/dm.py").read_text()
    bad = tmp_path / "dm.py"
    bad.write_text("from acrn_sim.hv.guest.vcpu import Vcpu\n" + dm)
    found = violations({"guests/service_vm/dm.py": of_hv(imports_of(bad))})
    assert found == [
        "guests/service_vm/dm.py: hv.guest.vcpu",
        "guests/service_vm/dm.py: hv.guest.vcpu.Vcpu",
    ]


def test_sim_knows_nothing_of_acrn():
    for path in sorted((ROOT / "sim").rglob("*.py")):
        assert not {
            m for m in imports_of(path) if m.split(".")[0] in ("hv", "guests", "scenarios")
        }, path


def test_hv_never_imports_guests_or_scenarios():
    for path in sorted((ROOT / "hv").rglob("*.py")):
        assert not {m for m in imports_of(path) if m.split(".")[0] in ("guests", "scenarios")}, path


def test_own_modules_are_imported_under_acrn_sim():
    """The folders install as acrn_sim.sim, acrn_sim.hv, ...: an import by a bare folder name
    would work in the repository and fail once installed."""
    bare = []
    for folder in (*FOLDERS, "tests", "acrn_sim"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bare += [
                f"{path.relative_to(ROOT)}: {m}"
                for m in raw_imports(path)
                if m.split(".")[0] in FOLDERS
            ]
    assert bare == []
