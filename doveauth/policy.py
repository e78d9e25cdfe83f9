"""Who may create an account: pure rules, table-tested without any I/O.

Two kinds of rule decide whether a first login creates an account. ``refusal`` judges the address
and password themselves; ``resource_refusal`` judges the machine (nocreate file, load, memory,
disk) from measurements that ``measure`` takes. Existing accounts are never subject to either.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

from chatmaild.mailbox import InvalidAddress, check_address

# libxcrypt refuses passphrases of 512 bytes or more, and SHA512-CRYPT's cost grows with the
# length (about 6 ms at 256 bytes here): refuse before hashing rather than after.
PASSWORD_MAX_BYTES = 256


@dataclass(frozen=True)
class CreationRules:
    addr_domain: str
    username_min_length: int
    username_max_length: int
    password_min_length: int


@dataclass(frozen=True)
class ResourceLimits:
    nocreate_file: Path
    mailboxes_dir: Path
    max_load_1m: float
    min_available_memory: int
    min_free_disk_space: int


@dataclass(frozen=True)
class Measurements:
    nocreate_exists: bool
    load_1m: float
    available_memory: int
    free_disk: int


def address_refusal(rules: CreationRules, addr: str) -> str | None:
    """Why no account may ever be created for this address, or None if it may."""
    try:
        localpart, domain = check_address(addr)
    except InvalidAddress as exc:
        return f"invalid address: {exc}"
    if domain != rules.addr_domain:
        return f"domain is not {rules.addr_domain}"
    if len(localpart) < rules.username_min_length:
        return f"username shorter than {rules.username_min_length} characters"
    if len(localpart) > rules.username_max_length:
        return f"username longer than {rules.username_max_length} characters"
    return None


def password_refusal(rules: CreationRules, password: str) -> str | None:
    """Why a new account may not have this password, or None if it may."""
    if len(password) < rules.password_min_length:
        return f"password shorter than {rules.password_min_length} characters"
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        return "password is not UTF-8"
    if size > PASSWORD_MAX_BYTES:
        return f"password longer than {PASSWORD_MAX_BYTES} bytes"
    if "\0" in password:
        return "password contains NUL"
    return None


def refusal(rules: CreationRules, addr: str, password: str) -> str | None:
    """Why no account may be created for this address and password, or None if it may."""
    return address_refusal(rules, addr) or password_refusal(rules, password)


def resource_refusal(limits: ResourceLimits, m: Measurements) -> str | None:
    """Why the machine may not take a new account now, or None."""
    if m.nocreate_exists:
        return f"{limits.nocreate_file} exists"
    if m.load_1m > limits.max_load_1m:
        return f"load {m.load_1m:.2f} is above max_load_1m={limits.max_load_1m:g}"
    if m.available_memory < limits.min_available_memory:
        return f"available memory {m.available_memory >> 20}M is below min_available_memory"
    if m.free_disk < limits.min_free_disk_space:
        return f"free disk {m.free_disk >> 20}M is below min_free_disk_space"
    return None


def measure(limits: ResourceLimits) -> Measurements:
    """Take the measurements ``resource_refusal`` judges (blocking: a few syscalls)."""
    return Measurements(
        nocreate_exists=limits.nocreate_file.exists(),
        load_1m=os.getloadavg()[0],
        available_memory=psutil.virtual_memory().available,
        free_disk=shutil.disk_usage(_existing_parent(limits.mailboxes_dir)).free,
    )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
