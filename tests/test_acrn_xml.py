"""ACRN v3 scenario XML in and out (scenarios/acrn_xml.py): each element's field, images, v2
and unknown elements, the model's limits, the twins of the example scripts, the export round
trip, and the hand-written scenarios through the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil

import pytest

from acrn_sim.guests import image_path
from acrn_sim.scenarios import acrn_xml, pre_launched, rtvm_latency, service_vm
from acrn_sim.scenarios.acrn_xml import PciDevice, VirtioConsole, VirtioNetwork, VuartEndpoint
from acrn_sim.scenarios.cli import build_parser, load_scenario
from acrn_sim.sim import ConfigError
from acrn_sim.sim.timing import TimingProfile
from acrn_sim.sim.units import parse_size
from conftest import ROOT, boot_configs, cli, messages

HELLO = image_path("hello.elf")
SERVICE = '<vm id="{id}"><load_order>SERVICE_VM</load_order><name>Service_VM</name></vm>'


def doc(*vms: str, hv: str = "", attrs: str = "") -> str:
    return f"<acrn-config{attrs}><hv>{hv}</hv>{''.join(vms)}</acrn-config>"


def vm(vid: int, name: str, load_order: str = "POST_LAUNCHED_VM", pcpus=(1,), body: str = ""):
    aff = "".join(f"<pcpu><pcpu_id>{p}</pcpu_id></pcpu>" for p in pcpus)
    return (
        f'<vm id="{vid}"><load_order>{load_order}</load_order><name>{name}</name>'
        f"<cpu_affinity>{aff}</cpu_affinity><memory><size>32</size></memory>{body}</vm>"
    )


def parse(text: str, images=None, **kw) -> acrn_xml.ScenarioXml:
    return acrn_xml.parse(text, "t.xml", {"*": HELLO} if images is None else images, **kw)


def by_name(sx: acrn_xml.ScenarioXml) -> dict:
    return {c.name: c for c in sx.configs}


def norm(c) -> dict:
    """A VmConfig's fields, comparable: the image by its real path, the Service VM's software
    factory by whether it has one (its device models follow from the User VMs compared)."""
    d = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
    d["image"] = os.path.realpath(d["image"])
    d["software"] = c.software is not None
    return d


def run_opts(script: str, **params) -> argparse.Namespace:
    opts = build_parser().parse_args(["run", script])
    opts.mem = parse_size(opts.mem)
    opts.params = {k: str(v) for k, v in params.items()}
    opts.profile_obj = TimingProfile.load()
    return opts


# ------------------------------------------------------------------ element -> field
def test_each_element_maps_to_its_vmconfig_field():
    rt = vm(
        1,
        "RT",
        pcpus=(2, 3),
        body="<vm_type>RTVM</vm_type><lapic_passthrough>y</lapic_passthrough>"
        "<io_completion_polling>y</io_completion_polling><priority>PRIO_HIGH</priority>"
        "<bvt_weight>7</bvt_weight><os_config><kern_type>KERNEL_ELF</kern_type>"
        "<kern_mod>rt_kernel</kern_mod><bootargs>\n   cyclic 10\n   500 </bootargs></os_config>",
    ).replace(
        "<pcpu><pcpu_id>2</pcpu_id></pcpu>",
        "<pcpu><pcpu_id>2</pcpu_id><real_time_vcpu>y</real_time_vcpu></pcpu>",
    )
    pre = vm(0, "PRE0", "PRE_LAUNCHED_VM", pcpus=(0,), body="<console_vuart>COM Port 1"
             "</console_vuart>").replace("<size>32</size>", "<size>64</size>")  # fmt: skip
    sx = parse(doc(pre, SERVICE.format(id=2), rt, hv="<FEATURES><SCHEDULER>SCHED_PRIO"
                   "</SCHEDULER></FEATURES>"), {"rt_kernel": HELLO, "PRE0": HELLO})  # fmt: skip
    assert sx.scheduler == "prio" and sx.notes == []
    assert [c.name for c in sx.configs] == ["PRE0", "RT", "Service_VM"]  # by <vm id>
    c = by_name(sx)["RT"]
    assert (c.load_order, c.vm_type, c.cpu_affinity) == ("POST_LAUNCHED_VM", "RTVM", [2, 3])
    assert c.memory == 32 << 20 and c.cmdline == "cyclic 10 500" and c.image == HELLO
    assert c.lapic_passthrough and c.io_completion_polling
    assert (c.priority, c.bvt_weight, c.watched) == ("PRIO_HIGH", 7, True)
    assert sx.real_time_vcpus["RT"] == [True, False]
    p = by_name(sx)["PRE0"]
    assert (p.load_order, p.memory, p.cpu_affinity) == ("PRE_LAUNCHED_VM", 64 << 20, [0])
    assert (p.vm_type, p.priority, p.lapic_passthrough) == ("STANDARD_VM", "PRIO_LOW", False)
    # The Service VM is the model's, with the User VMs' device models, on the first pCPU no
    # pre-launched VM owns
    s = by_name(sx)["Service_VM"]
    assert s.image == image_path("service_vm.elf") and s.cmdline == "idle"
    assert s.cpu_affinity == [1] and s.software is not None and not s.watched


@pytest.mark.parametrize(
    "xml_value, model", [("SCHED_NOOP", "noop"), ("SCHED_BVT", "bvt"), ("SCHED_PRIO", "prio")]
)
def test_scheduler(xml_value, model):
    text = doc(vm(0, "A", "PRE_LAUNCHED_VM"), hv=f"<FEATURES><SCHEDULER>{xml_value}"
               "</SCHEDULER></FEATURES>")  # fmt: skip
    assert parse(text).scheduler == model
    assert parse(doc(vm(0, "A", "PRE_LAUNCHED_VM"))).scheduler == "bvt"  # config.xsd default


def test_memory_sizes_and_host_regions():
    hpa = (
        "<hpa_region><start_hpa>0x100000000</start_hpa><size_hpa>256</size_hpa></hpa_region>"
        "<hpa_region><start_hpa>0x120000000</start_hpa><size_hpa>16</size_hpa></hpa_region>"
    )
    pre = vm(0, "PRE0", "PRE_LAUNCHED_VM").replace("<size>32</size>", "<size>8</size>" + hpa)
    only_hpa = vm(1, "PRE1", "PRE_LAUNCHED_VM", pcpus=(2,)).replace("<size>32</size>", hpa)
    post = vm(3, "POST", pcpus=(3,)).replace("<memory><size>32</size></memory>", "")
    sx = parse(doc(pre, only_hpa, SERVICE.format(id=2), post))
    # ACRN's memory allocator (static_allocators/memory_allocator.py) gives a pre-launched VM
    # its <size> plus its hpa_regions
    assert by_name(sx)["PRE0"].memory == (8 + 256 + 16) << 20
    assert by_name(sx)["PRE1"].memory == (256 + 16) << 20
    assert by_name(sx)["POST"].memory == 1024 << 20  # VMtypes.xsd <size> default
    assert sx.hpa_regions["PRE0"][0] == acrn_xml.HpaRegion(0x1_0000_0000, 256 << 20)
    assert any("<hpa_region> ignored" in n for n in sx.notes)


def test_service_vm_bootargs_and_model_settings():
    svc = SERVICE.format(id=0).replace(
        "</name>", '</name><?acrn-sim dm_priority_inheritance="n"?>'
        "<os_config><bootargs>busy</bootargs></os_config><bvt_weight>3</bvt_weight>"
    )  # fmt: skip
    user = vm(1, "U").replace("</name>", '</name><?acrn-sim watched="n"?>')
    sx = parse(doc(svc, user, vm(2, "W", pcpus=(2,))))
    s, u = by_name(sx)["Service_VM"], by_name(sx)["U"]
    assert s.cmdline == "busy" and not s.dm_priority_inheritance and s.bvt_weight == 3
    assert not u.watched and by_name(sx)["W"].watched
    # the command line's --service-vm-busy makes it busy as well
    idle = doc(SERVICE.format(id=0), vm(1, "U"))
    assert by_name(parse(idle, service_vm_busy=True))["Service_VM"].cmdline == "busy"
    bad = user.replace('watched="n"', 'watch="n"')
    with pytest.raises(ConfigError, match=r"<\?acrn-sim watch\?>: unknown setting"):
        parse(doc(SERVICE.format(id=0), bad))


# --------------------------------------------------------------------------- images
def test_images_by_vm_name_then_kern_mod_then_default():
    mod = "<os_config><kern_mod>K</kern_mod></os_config>"
    text = doc(
        SERVICE.format(id=0),
        vm(1, "A", body=mod),
        vm(2, "B", pcpus=(2,), body=mod),
        vm(3, "C", pcpus=(3,)),
    )
    a, b, t = image_path("cpuid.elf"), image_path("msr.elf"), image_path("timing.elf")
    got = by_name(parse(text, {"A": a, "K": b, "*": t}))
    assert (got["A"].image, got["B"].image, got["C"].image) == (a, b, t)
    with pytest.raises(ConfigError) as e:
        parse(text, {"K": b})
    assert str(e.value) == (
        "t.xml: VM C: no image: give --image C=PATH (or --image '*=PATH' for every VM without "
        "one, or a t.images file)"
    )
    with pytest.raises(ConfigError, match=r"image X: no VM <name> or <kern_mod> is 'X'"):
        parse(text, {"X": a, "*": t})
    with pytest.raises(ConfigError, match="image Service_VM: the Service VM runs the model's"):
        parse(text, {"Service_VM": a, "*": t})
    svc_tag = text.replace("</name></vm>", "</name><os_config><kern_mod>Linux_bzImage</kern_mod>"
                           "</os_config></vm>", 1)  # fmt: skip
    with pytest.raises(ConfigError, match="image Linux_bzImage: the Service VM runs the model's"):
        parse(svc_tag, {"Linux_bzImage": a, "*": t})
    with pytest.raises(ConfigError, match="VM A: image not found: /nonexistent.elf"):
        parse(text, {"A": "/nonexistent.elf", "*": t})


def test_images_from_the_sidecar_and_the_command_line(tmp_path):
    (tmp_path / "imgs").mkdir()
    shutil.copy(image_path("timing.elf"), tmp_path / "imgs" / "t.elf")
    xml = tmp_path / "s.xml"
    xml.write_text(doc(SERVICE.format(id=0), vm(1, "A"), vm(2, "B", pcpus=(2,))))
    (tmp_path / "s.images").write_text("# images\n\nA = imgs/t.elf\n*=imgs/t.elf\n")
    sx = acrn_xml.load(xml)
    assert by_name(sx)["A"].image == str(tmp_path / "imgs" / "t.elf")  # relative to the file
    sx = acrn_xml.load(xml, images=[f"A={HELLO}"])  # the command line wins over the file
    assert by_name(sx)["A"].image == HELLO and by_name(sx)["B"].image.endswith("t.elf")
    (tmp_path / "s.images").write_text("A imgs/t.elf\n")
    with pytest.raises(ConfigError, match=r"s.images:1: 'A imgs/t.elf': expected NAME=PATH"):
        acrn_xml.load(xml)


def test_images_through_the_command_line(tmp_path):
    xml = tmp_path / "two.xml"
    xml.write_text(doc(SERVICE.format(id=0), vm(1, "A"), vm(2, "B", pcpus=(2,))))
    r = cli("run", str(xml), "--image", f"A={HELLO}")
    assert r.returncode == 2
    assert messages(r.stderr) == [
        "acrn-sim: error: two.xml: VM B: no image: give --image B=PATH (or --image '*=PATH' "
        "for every VM without one, or a two.images file)"
    ]
    r = cli("run", str(xml), "--image", f"A={HELLO}", "--image", f"*={image_path('timing.elf')}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hello from an ACRN guest!")  # A is the first watched VM
    r = cli("run", "guests/images/hello.elf", "--image", f"A={HELLO}")
    assert r.returncode == 2 and "--image is for a scenario .xml" in r.stderr


# ------------------------------------------------------------------- v2 and unknown
V2_SHARED = """<acrn-config board="generic_board" scenario="shared">
  <hv><DEBUG_OPTIONS><RELEASE>n</RELEASE></DEBUG_OPTIONS></hv>
  <vm id="0">
    <vm_type>SERVICE_VM</vm_type>
    <name>ACRN Service VM</name>
    <guest_flags><guest_flag>0</guest_flag></guest_flags>
    <memory><start_hpa>0</start_hpa><size>0x20000000</size></memory>
  </vm>
  <vm id="1">
    <vm_type>POST_STD_VM</vm_type>
    <cpu_affinity><pcpu_id>0</pcpu_id><pcpu_id>1</pcpu_id></cpu_affinity>
  </vm>
</acrn-config>"""


def test_a_v2_file_is_refused_in_one_line(tmp_path):
    xml = tmp_path / "old.xml"
    xml.write_text(V2_SHARED)
    r = cli("run", str(xml))
    assert r.returncode == 2
    lines = messages(r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith(
        'acrn-sim: error: old.xml: an ACRN v2.x scenario (<vm id="0"> '
        "has <vm_type>SERVICE_VM</vm_type> and no <load_order>)"
    )
    assert "scenario_config/upgrader.py" in lines[0] and "Configurator" in lines[0]
    # v2's elements alone give it away too
    v2ish = doc(vm(0, "A", "PRE_LAUNCHED_VM", body='<legacy_vuart id="0"/>'))
    with pytest.raises(ConfigError, match=r'v2.x scenario \(<vm id="0"> has <legacy_vuart>\)'):
        parse(v2ish)


def test_ignored_elements_are_reported_once(tmp_path):
    win = "<os_type>Windows OS</os_type><vbootloader>y</vbootloader>"
    text = doc(
        SERVICE.format(id=0),
        vm(1, "A", body=win),
        vm(2, "B", pcpus=(2,), body=win),
        hv="<DEBUG_OPTIONS><CONSOLE_LOGLEVEL>3</CONSOLE_LOGLEVEL></DEBUG_OPTIONS>"
        "<FEATURES><RELOC_ENABLED>y</RELOC_ENABLED><RDT><RDT_ENABLED>n</RDT_ENABLED></RDT>"
        "</FEATURES>",
        attrs=' board="nuc11tnbi5" scenario="shared"',
    )
    xml = tmp_path / "s.xml"
    xml.write_text(text)
    r = cli("run", str(xml), "--image", f"*={HELLO}")
    assert r.returncode == 0, r.stderr
    assert messages(r.stderr) == [
        'acrn-sim: s.xml: board="nuc11tnbi5" ignored (not modelled: the model\'s machine is '
        "its own)",
        "acrn-sim: s.xml: <DEBUG_OPTIONS> ignored (not modelled)",
        "acrn-sim: s.xml: <RELOC_ENABLED> ignored (not modelled)",
        "acrn-sim: s.xml: <os_type> ignored (not modelled: the device model's Windows options)",
        "acrn-sim: s.xml: <vbootloader> ignored (not modelled: the device model boots the "
        "kernel directly, no OVMF)",
    ]  # RDT_ENABLED n is what the model does: nothing to report


@pytest.mark.parametrize(
    "where, xml, message",
    [
        ("hv", "<FEATURES><RDT><RDT_ENABLED>y</RDT_ENABLED></RDT></FEATURES>", "<RDT_ENABLED>y"),
        ("hv", "<FEATURES><SSRAM><SSRAM_ENABLED>y</SSRAM_ENABLED></SSRAM></FEATURES>",
         "Software SRAM"),
        ("hv", "<FEATURES><SCHEDULER>SCHED_IORR</SCHEDULER></FEATURES>", "SCHED_IORR"),
        ("hv", "<FEATURES><L1D_VMENTRY_ENABLED>y</L1D_VMENTRY_ENABLED></FEATURES>", "L1D flush"),
        ("hv", "<CACHE_REGION><CACHE_ALLOCATION><CACHE_ID>0x8</CACHE_ID></CACHE_ALLOCATION>"
         "</CACHE_REGION>", "<CACHE_REGION>"),
        ("vm", "<secure_world_support>y</secure_world_support>", "secure world"),
        ("vm", "<virtual_cat_support>y</virtual_cat_support>", "vCAT"),
        ("vm", "<epc_section><base>0x1000</base><size>0x1000</size></epc_section>", "SGX"),
        ("vm", "<bvt_warp_value>2</bvt_warp_value>", "BVT warp"),
        ("vm", "<os_config><ramdisk_mod>initrd</ramdisk_mod></os_config>", "<ramdisk_mod>"),
        ("vm", "<vm_type>TEE_VM</vm_type>", "TEE/REE"),
        ("vm", "<console_vuart>COM Port 2</console_vuart>", "COM Port 1 (0x3F8) only"),
        ("vm", "<lapic_passtrough>y</lapic_passtrough>", "unknown element <lapic_passtrough>"),
        ("vm", "<memory><start_hpa>0x0</start_hpa></memory>", "layout before ACRN 3.0"),
    ],
)  # fmt: skip
def test_elements_that_would_change_the_meaning_are_refused(where, xml, message):
    if where == "hv":
        text = doc(vm(0, "A", "PRE_LAUNCHED_VM"), hv=xml)
    else:
        body = vm(0, "A", "PRE_LAUNCHED_VM", body=xml)
        if "<memory><start" in xml:
            body = body.replace("<memory><size>32</size></memory>", "")
        text = doc(body)
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert message in str(e.value) and "\n" not in str(e.value)


# -------------------------------------------------------------------------- devices
def test_passthrough_virtio_vuarts_and_shared_memory_are_kept_typed():
    devs = (
        "<pci_devs><pci_dev>00:02.0 VGA compatible controller: Intel Corporation (rev 01)"
        "</pci_dev><pci_dev/></pci_devs><virtio_devices><console><use_type>Virtio serial port"
        "</use_type><backend_type>pty</backend_type></console><console/><network>"
        "<interface_name>tap0</interface_name></network><input><id>kbd</id></input>"
        "<block>/a.img</block><block>/b.img</block><vsock>3</vsock></virtio_devices>"
    )
    hv = (
        "<vuart_connections><vuart_connection><name>c1</name><type>legacy</type>"
        "<endpoint><vm_name>A</vm_name><io_port>0x2F8</io_port></endpoint>"
        "<endpoint><vm_name>Service_VM</vm_name><io_port>0x3E8</io_port></endpoint>"
        "</vuart_connection></vuart_connections><FEATURES><IVSHMEM><IVSHMEM_REGION>"
        "<NAME>shm0</NAME><PROVIDED_BY>Hypervisor</PROVIDED_BY><IVSHMEM_SIZE>2</IVSHMEM_SIZE>"
        "<IVSHMEM_VMS><IVSHMEM_VM><VM_NAME>A</VM_NAME><VBDF>00:08.0</VBDF></IVSHMEM_VM>"
        "</IVSHMEM_VMS></IVSHMEM_REGION></IVSHMEM></FEATURES>"
    )
    sx = parse(doc(SERVICE.format(id=0), vm(1, "A", body=devs), hv=hv))
    d = sx.devices["A"]
    assert d.pci == [PciDevice(0, 2, 0, "VGA compatible controller: Intel Corporation (rev 01)")]
    assert d.pci[0].bdf == "00:02.0"
    assert d.virtio.console == [VirtioConsole("Virtio serial port", "pty"), VirtioConsole()]
    assert d.virtio.network == [VirtioNetwork("tap0")] and d.virtio.input[0].id == "kbd"
    assert d.virtio.block == ["/a.img", "/b.img"] and d.virtio.vsock == [3]
    assert sx.vuart_connections[0].type == "legacy"
    assert sx.vuart_connections[0].endpoints == (
        VuartEndpoint("A", 0x2F8),
        VuartEndpoint("Service_VM", 0x3E8),
    )
    assert sx.ivshmem[0].name == "shm0" and sx.ivshmem[0].size == 2 << 20
    assert sx.ivshmem[0].vms == (("A", "00:08.0"),)
    assert sx.devices["Service_VM"].pci == []
    for what in ("<virtio_devices>", "<vuart_connections>", "<IVSHMEM>"):
        assert any(n.startswith(f"{what} parsed, not modelled yet") for n in sx.notes), what
    # a post-launched VM's <pci_devs> are its device model's business (-s N,passthru,...)
    assert any(n.startswith("<pci_devs> of a post-launched VM") for n in sx.notes)
    pre = vm(0, "P", "PRE_LAUNCHED_VM", body="<virtio_devices><block>/a</block></virtio_devices>")
    with pytest.raises(ConfigError, match="VM P: <virtio_devices>: only a post-launched VM"):
        parse(doc(pre))
    with pytest.raises(ConfigError, match="endpoint VM 'B' is not a <vm> of this scenario"):
        parse(doc(SERVICE.format(id=0), vm(1, "A", body=devs), hv=hv.replace(">A<", ">B<", 1)))


# ---------------------------------------------------------------------------- limits
@pytest.mark.parametrize(
    "text, message",
    [
        (doc(vm(0, "A", "PRE_LAUNCHED_VM", pcpus=(64,))), "pCPU 64: the model's pCPU ids are 0"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM").replace("32</size>", "20000</size>")),
         "needs 19.5 GiB of machine memory"),
        (doc(SERVICE.format(id=0), vm(1, "A").replace("32</size>", "17000</size>")),
         "needs 16.6 GiB of machine memory"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM"), vm(1, "B", "PRE_LAUNCHED_VM", pcpus=(2,)),
             hv="<CAPACITIES><MAX_VM_NUM>1</MAX_VM_NUM></CAPACITIES>"),
         "2 VMs but <CAPACITIES><MAX_VM_NUM> is 1"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM").replace("32</size>", "1</size>")),
         "1 MB of memory: the model needs at least 2 MB"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM", pcpus=(0,), body="<vm_type>RTVM</vm_type>")),
         "pCPU 0 cannot be given to an RTVM"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM", body="<lapic_passthrough>y</lapic_passthrough>")),
         "<lapic_passthrough>y needs <vm_type>RTVM</vm_type>"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM", body="<own_pcpu>y</own_pcpu>"),
             vm(1, "B", "PRE_LAUNCHED_VM")), "<own_pcpu>y but its pCPUs are shared with B"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM"), vm(1, "A", "PRE_LAUNCHED_VM", pcpus=(2,))),
         "VM name 'A' is used twice"),
        (doc(vm(0, "A")), "post-launched VM A needs a SERVICE_VM"),
        (doc(vm(0, "A", "PRE_LAUNCHED_VM", pcpus=())), "assign at least one pCPU"),
        (doc(vm(0, "A_name_too_long_for_acrn", "PRE_LAUNCHED_VM")), "up to 15 letters"),
        ("<acrn-config><hv/></acrn-config>", "no <vm> element: not a scenario XML"),
        ("<acrn-config><vm>", "not well-formed XML"),
    ],
)  # fmt: skip
def test_the_models_limits_and_acrns_rules_are_checked(text, message):
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_missing_file_is_one_line():
    r = cli("run", "no/such/scenario.xml")
    assert r.returncode == 2
    assert messages(r.stderr) == ["acrn-sim: error: scenario XML not found: no/such/scenario.xml"]


# ----------------------------------------------------------------------------- twins
TWINS = ["hello", "two_user_vms", "automotive_sdc", "rtvm_latency"]


@pytest.mark.parametrize("name", TWINS)
def test_each_twin_has_the_scripts_configs(name):
    opts = run_opts(f"scenarios/{name}.py")
    script = load_scenario(str(ROOT / "scenarios" / f"{name}.py"), opts)
    sx = acrn_xml.load(ROOT / "scenarios" / f"{name}.xml")
    assert sx.notes == []
    assert [norm(c) for c in sx.configs] == [norm(c) for c in script]
    assert sx.scheduler == (opts.scenario_scheduler or "bvt")


@pytest.mark.parametrize("name", ["hello", "two_user_vms", "automotive_sdc"])
def test_twin_and_script_give_the_same_consoles_and_statistics(name, tmp_path):
    out = {}
    for form in ("py", "xml"):
        stats = tmp_path / f"{form}.json"
        r = cli("run", f"scenarios/{name}.{form}", "--consoles", "--stats", str(stats),
                timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert messages(r.stderr) == []
        out[form] = (r.stdout, json.loads(stats.read_text()))
    # the script's own results (results_json) are the one section the file cannot have
    py_scenario = out["py"][1].pop("scenario")
    assert out["xml"][1].pop("scenario") is None
    assert (py_scenario is not None) == (name == "automotive_sdc")
    assert out["xml"][1] == out["py"][1]
    assert out["xml"][1]["vms"]  # not two empty runs
    if name == "automotive_sdc":
        # The script prints its report() after the consoles; the file has no code to run
        console, report = out["py"][0][: len(out["xml"][0])], out["py"][0][len(out["xml"][0]) :]
        assert console == out["xml"][0] and report.startswith("\nSoftware-defined cockpit")
        assert console.startswith("[Service_VM] Service VM: idle\nresult frames=30 misses=")
    else:
        assert out["xml"][0] == out["py"][0]


@pytest.mark.parametrize("mode", ["dedicated", "shared"])
def test_rtvm_latency_twins_run_as_the_scripts_configurations(mode):
    """rtvm_latency.py runs both configurations (RUNS), the XML holds one each: each twin is
    compared with the configuration the script builds, run alike."""
    xml = "rtvm_latency.xml" if mode == "dedicated" else "rtvm_latency_shared.xml"
    sx = acrn_xml.load(ROOT / "scenarios" / xml)
    script = rtvm_latency._configs(mode, 300, 500)
    assert [norm(c) for c in sx.configs] == [norm(c) for c in script]
    runs = [boot_configs(c, main="LATENCY_VM", scheduler="bvt", trace=False)
            for c in (script, sx.configs)]  # fmt: skip
    a, b = runs
    assert a.hv.consoles == b.hv.consoles and "result samples=300" in a.console
    assert a.hv.stats.to_json() == b.hv.stats.to_json()


# ---------------------------------------------------------------------------- export
@pytest.mark.parametrize("name", TWINS)
def test_export_round_trip(name, tmp_path):
    out = tmp_path / "sub" / f"{name}.xml"
    out.parent.mkdir()
    r = cli("scenario", "export", f"scenarios/{name}.py", "-o", str(out))
    assert r.returncode == 0, r.stderr
    side = out.with_suffix(".images").read_text()
    assert "=../../" in side or "=/" in side  # paths relative to the images file
    sx = acrn_xml.load(out)
    script = load_scenario(str(ROOT / "scenarios" / f"{name}.py"), run_opts(f"{name}.py"))
    assert [norm(c) for c in sx.configs] == [norm(c) for c in script]
    assert sx.notes == []


def test_export_to_stdout_lists_the_images_and_takes_parameters(tmp_path):
    r = cli("scenario", "export", "scenarios/automotive_sdc.py", "--set", "frames=4",
            "--set", "cluster_rt=no")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"<!-- image: workload={image_path('workload.elf')} -->" in r.stdout
    xml = tmp_path / "a.xml"
    xml.write_text(r.stdout)
    sx = acrn_xml.load(xml, images=[f"workload={image_path('workload.elf')}"])
    cluster = by_name(sx)["CLUSTER"]
    assert cluster.cmdline == "frame 4 16667 4000 8" and cluster.vm_type == "STANDARD_VM"
    r = cli("scenario", "export", "scenarios/automotive_sdc.py", "--set", "bogus=1")
    assert r.returncode == 2 and "unknown parameter 'bogus'" in r.stderr


def test_what_the_format_cannot_say_is_an_export_error():
    configs = [pre_launched(HELLO, memory=(32 << 20) + 4096), service_vm()]
    with pytest.raises(ConfigError, match="memory 33558528 bytes: the XML gives MB"):
        acrn_xml.to_xml(configs)
    configs = [pre_launched(HELLO, cmdline="a  b"), service_vm()]
    with pytest.raises(ConfigError, match="<bootargs> collapses whitespace"):
        acrn_xml.to_xml(configs)
    configs = rtvm_latency._configs("dedicated", 10, 500)
    configs[0].cpu_affinity = [3]
    with pytest.raises(ConfigError, match="Service VM runs on pCPU 0"):
        acrn_xml.to_xml(configs)
    configs = rtvm_latency._configs("dedicated", 10, 500)
    configs[2].vm_manager = [(1, "pause", "X", None)]
    with pytest.raises(ConfigError, match="run-time options"):
        acrn_xml.to_xml(configs)


# ------------------------------------------------------------- hand-written scenarios
HAND_WRITTEN = {
    "shared": {
        "POST_STD_VM1": "cmdline: 'console=ttyS0 shared'",
        "POST_RT_VM1": "result samples=200",
    },
    "partitioned": {
        "PRE_STD_VM0": "cmdline: 'console=ttyS0 partition 0'",
        "PRE_STD_VM1": "rdmsr: min 1781",
    },
    "hybrid": {"SAFETY_VM0": "result samples=100", "POST_STD_VM2": "cpuid: min"},
    "cfl-k700-i7_hybrid_rt": {
        "PRE_RT_VM0": "result samples=300",
        "POST_STD_VM2": "Hello from an ACRN guest!",
    },
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_scenarios_run_to_completion(name):
    r = cli("run", f"scenarios/xml/{name}.xml", "--report", timeout=300)
    assert r.returncode == 0, r.stderr
    lines = messages(r.stderr)
    notes = [ln for ln in lines if ln.startswith(f"acrn-sim: {name}.xml: ")]
    assert notes and not [ln for ln in lines if "error" in ln]
    assert "simulated time:" in r.stderr  # the --report after a complete run
    # Each VM's console, whole (the command line interleaves them)
    sx = acrn_xml.load(ROOT / "scenarios" / "xml" / f"{name}.xml")
    assert any(d.pci for d in sx.devices.values())  # each keeps its passthrough devices
    run = boot_configs(sx.configs, main=next(iter(HAND_WRITTEN[name])), scheduler=sx.scheduler,
                       trace=False)  # fmt: skip
    assert run.result.status == "done"
    for vm_name, text in HAND_WRITTEN[name].items():
        assert text in run.console_of(vm_name), (vm_name, run.console_of(vm_name))
