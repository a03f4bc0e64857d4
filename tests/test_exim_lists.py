"""The files mailban keeps for Exim's ACLs, without Exim (tests/test_exim_e2e.py runs the real
one): sasl-disable's dsearch directory (one empty file per disabled account, which the MAIL ACL
stats at each message) next to its lsearch list, and the configuration check that asks for it."""

from __future__ import annotations

import os
from pathlib import Path

from mailban.actions.exim import write_dir
from mailban.actions.sasl_disable import SaslDisableAction
from mailban.core.records import Ban


def ban(user: str) -> Ban:
    return Ban(jail="outbound-user", key_type="user", key=user, time=0, until=86400, count=8,
               findtime=3600, actions=("sasl-disable",))


def test_write_dir_holds_one_file_per_key_and_nothing_else(tmp_path: Path) -> None:
    d = tmp_path / "disabled-users.d"
    write_dir(str(d), ["alice@example.test", "bob"])
    assert sorted(os.listdir(d)) == ["alice@example.test", "bob"]
    assert (d / "bob").stat().st_size == 0 and oct(d.stat().st_mode & 0o777) == "0o755"
    (d / "stray").write_text("")  # what mailban did not decide goes
    write_dir(str(d), ["bob"])
    assert os.listdir(d) == ["bob"]
    write_dir(str(d), [])
    assert os.listdir(d) == []


def test_write_dir_leaves_out_keys_that_are_not_file_names(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    outside = tmp_path / "outside"
    write_dir(str(d), ["a/../../outside", ".", "..", "x" * 256, "ok"])
    assert os.listdir(d) == ["ok"] and not outside.exists()


def test_sasl_disable_writes_the_list_and_the_directory(tmp_path: Path) -> None:
    lst = tmp_path / "exim" / "disabled-users"
    action = SaslDisableAction("sasl-disable", {
        "dovecot_deny_file": "", "postfix_map": "", "kick": [], "exim_list": str(lst), "exim": []})
    action.start([])
    assert os.listdir(tmp_path / "exim" / "disabled-users.d") == []
    action.ban([ban("alice@example.test")])
    assert "alice@example.test" in lst.read_text()
    assert os.listdir(tmp_path / "exim" / "disabled-users.d") == ["alice@example.test"]
    action.unban([ban("alice@example.test")])
    assert os.listdir(tmp_path / "exim" / "disabled-users.d") == []
    # the directory alone (no list file, no authenticator check)
    alone = SaslDisableAction("sasl-disable", {
        "dovecot_deny_file": "", "postfix_map": "", "kick": [], "exim_dir": str(tmp_path / "d"), "exim": []})
    alone.start([ban("bob")])
    assert os.listdir(tmp_path / "d") == ["bob"]


def test_check_asks_for_the_directory_in_the_mail_acl(tmp_path: Path) -> None:
    lst = tmp_path / "disabled-users"
    conf = tmp_path / "exim.conf"
    # an Exim configured as before: the list file in the MAIL ACL, no directory
    conf.write_text("acl_mail:\n  deny authenticated = *\n"
                    f"    condition = ${{lookup{{$authenticated_id}}lsearch{{{lst}}}{{yes}}{{no}}}}\n")
    exim = ["sh", "-c", f"cat {conf}", "exim"]  # stands for `exim -bP config`
    action = SaslDisableAction("sasl-disable", {
        "dovecot_deny_file": "", "postfix_map": "", "kick": [], "exim_list": str(lst), "exim": exim})
    (warning,) = action.check_config()
    assert f"{lst}.d" in warning and "dsearch,filter=file,cache=no_rd" in warning
    conf.write_text(conf.read_text() + f"    condition = ${{lookup{{$authenticated_id}}dsearch,filter=file,"
                                       f"cache=no_rd{{{lst}.d}}{{yes}}{{no}}}}\n")
    assert action.check_config() == []
