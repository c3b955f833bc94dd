"""The README's config and code examples work as written."""

from __future__ import annotations

import re
from pathlib import Path

from spotsafe.policy import get_pool, load_pools

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_pools_example_loads(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    config = tmp_path / "spotsafe.toml"
    config.write_text(block.group(1))
    pools = load_pools(config)
    assert get_pool("critical", pools).max_lost_work_s == 300
    assert get_pool("sweep", pools).max_failures == 0
    assert get_pool("sweep", pools).max_preemptions == get_pool("experiment").max_preemptions
