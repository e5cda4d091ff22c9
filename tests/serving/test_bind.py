"""serve refuses an address it cannot listen on before loading the model and before it says it
serves: exit 2, naming the address."""

import socket

import pytest

import softprompt.modeling
from softprompt.cli import main


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr(softprompt.modeling, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


def test_a_port_in_use_is_exit_2_before_the_model_loads(no_model, tmp_path, capsys):
    (tmp_path / "p").mkdir()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        assert main(["serve", "--prompts", str(tmp_path / "p"), "--port", str(port)]) == 2
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port" in err
    assert "task(s) on" not in err and "Traceback" not in err


@pytest.mark.parametrize("host", ["999.1.1.1", "no such host.invalid"])
def test_a_host_that_is_not_an_address_is_exit_2_before_the_model_loads(no_model, tmp_path, capsys, host):
    (tmp_path / "p").mkdir()
    assert main(["serve", "--prompts", str(tmp_path / "p"), "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"--host {host!r} is not an address of this machine" in err
    assert "task(s) on" not in err and "Traceback" not in err


def test_a_foreign_address_is_refused_too(no_model, tmp_path, capsys):
    (tmp_path / "p").mkdir()
    assert main(["serve", "--prompts", str(tmp_path / "p"), "--host", "192.0.2.1", "--port", "0"]) == 2  # TEST-NET
    assert "cannot listen on 192.0.2.1:0: Cannot assign requested address" in capsys.readouterr().err
