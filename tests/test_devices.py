"""Device classes: bundled files, detection without NVML, malformed files, budgets, names, round trip."""

from __future__ import annotations

import dataclasses

import pytest

from budgetplan.devices import (
    NUMBER_FIELDS,
    detect_device,
    device_to_toml,
    list_devices,
    load_device,
    read_device_file,
)
from budgetplan.errors import DeviceError


def test_bundled_devices_load_and_every_number_has_a_source():
    devices = list_devices()
    assert {"jetson-nano", "raspberry-pi-4-4gb", "android-midrange", "iphone-class", "raspberry-pi-5-8gb"} <= {
        d.name for d in devices}
    for device in devices:
        for name in NUMBER_FIELDS:
            assert any(s.startswith(f"{name}:") and len(s) > len(name) + 5 for s in device.sources), (device.name, name)


def test_detect_falls_back_to_psutil_and_labels_the_uplink_an_assumption():
    device = detect_device(seconds=0.2)
    assert device.memory_bytes > 0 and device.flops_per_s > 0
    uplink = next(s for s in device.sources if s.startswith("uplink_bits_per_s:"))
    assert "assumption" in uplink
    memory = next(s for s in device.sources if s.startswith("memory_bytes:"))
    assert "psutil" in memory or "NVML" in memory


def test_malformed_toml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nmemory_bytes = = 3\n')
    with pytest.raises(DeviceError) as info:
        read_device_file(path)
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "\n" not in message


@pytest.mark.parametrize("field,value", [("memory_bytes", 0), ("flops_per_s", -1.0), ("samples_per_round", 0),
                                         ("uplink_bits_per_s", 0.0)])
def test_zero_or_negative_budget_is_refused_naming_the_field(tmp_path, field, value):
    text = device_to_toml(load_device("jetson-nano"))
    lines = [f"{field} = {value!r}" if line.startswith(f"{field} =") else line for line in text.splitlines()]
    path = tmp_path / "zero.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DeviceError, match=field):
        read_device_file(path)


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(DeviceError) as info:
        load_device("no-such-board")
    assert "no-such-board" in str(info.value) and "jetson-nano" in str(info.value)


def test_device_to_toml_round_trip(tmp_path):
    for device in list_devices():
        path = tmp_path / f"{device.name}.toml"
        path.write_text(device_to_toml(device))
        back = read_device_file(path)
        assert dataclasses.replace(back, origin=device.origin) == device
