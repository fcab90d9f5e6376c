"""The BPF sources, shipped as package data so an installed hostflame finds them."""

from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent
PROGRAM_PATH = BPF_DIR / "profile.bpf.c"
HEADER_PATH = BPF_DIR / "profile.h"
