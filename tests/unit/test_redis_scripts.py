"""How the Lua scripts are assembled: Redis reads a script's flags only from its first
line, so a script's shebang goes before the shared library."""

from __future__ import annotations

from conveyor.backends.redis._scripts import NAMES, assemble, scripts_for


def test_the_shebang_goes_before_the_library() -> None:
    assert assemble("-- lib", "#!lua flags=allow-oom\nreturn 1") == (
        "#!lua flags=allow-oom\n-- lib\nreturn 1"
    )
    assert assemble("-- lib", "return 1") == "-- lib\nreturn 1"


def test_only_new_work_is_refused_whole_at_the_memory_limit() -> None:
    firsts = {name: s.source.partition("\n")[0] for name, s in scripts_for(60.0).items()}
    assert set(firsts) == set(NAMES)
    refused = {name for name, line in firsts.items() if line == "#!lua"}
    assert refused == {"enqueue", "retry"}
    for name in ("fetch", "probe", "renew", "complete", "cancel", "purge", "workers", "lock"):
        assert firsts[name] == "#!lua flags=allow-oom", name
