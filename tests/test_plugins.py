"""Plugins by name: --plugin and a config's `plugins` make registered names work in configs and --set."""

import pytest
from typer.testing import CliRunner

from wgflow import experiments
from wgflow.cli import app
from wgflow.errors import InputError
from wgflow.losses import LOSSES
from wgflow.units import ACTIVATIONS

runner = CliRunner()

PLUGIN = """
import jax
import jax.numpy as jnp
from wgflow.losses import Loss, register_loss
from wgflow.units import Activation, register_activation

register_activation(Activation("{act}", lambda z: jax.nn.softplus(2 * z) / 2))
register_loss(Loss("{loss}", lambda f, y: jnp.log(jnp.cosh(f - y))))
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch, request):
    """A plugin module in the current directory registering an activation and a loss (unregistered after)."""
    tag = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    name, act, loss = f"wgflow_plugin_{tag}", f"softplus2_{tag}", f"logcosh_{tag}"
    (tmp_path / f"{name}.py").write_text(PLUGIN.format(act=act, loss=loss))
    monkeypatch.chdir(tmp_path)
    yield name, act, loss
    ACTIVATIONS.pop(act, None)
    LOSSES.pop(loss, None)


def test_a_plugin_named_in_a_config(plugin, tmp_path):
    name, act, loss = plugin
    assert act not in ACTIVATIONS
    cfg_file = tmp_path / "mine.toml"
    cfg_file.write_text(f'name = "mine"\nkind = "teacher_student"\nplugins = ["{name}"]\n\n[model]\nactivation = "{act}"\nloss = "{loss}"\n')
    module, cfg = experiments.load(str(cfg_file))
    assert cfg.model.activation == act and cfg.model.loss == loss and cfg.plugins == [name]
    assert act in ACTIVATIONS
    # the resolved config (config.toml of a run) keeps the plugin, so --resume and report find the names again
    from wgflow.experiments.config import dump_toml

    assert f'plugins = [\n    "{name}",\n]' in dump_toml(cfg)


def test_a_plugin_from_the_command_line_makes_set_work(plugin):
    name, act, _ = plugin
    result = runner.invoke(app, ["config", "chizat-bach-relu", "--set", f"model.activation={act}"])
    assert result.exit_code == 2 and f"unknown activation '{act}'" in result.output
    result = runner.invoke(app, ["config", "chizat-bach-relu", "--plugin", name, "--set", f"model.activation={act}"])
    assert result.exit_code == 0, result.output
    assert f'activation = "{act}"' in result.output and name in result.output


def test_plugin_import_errors_are_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["config", "chizat-bach-relu", "--plugin", "no_such_wgflow_plugin"])
    assert result.exit_code == 2 and "cannot import the plugin 'no_such_wgflow_plugin': no module named" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "broken_wgflow_plugin.py").write_text("raise RuntimeError('needs a GPU')\n")
    with pytest.raises(InputError, match="importing the plugin 'broken_wgflow_plugin' failed: RuntimeError: needs a GPU"):
        experiments.load("chizat-bach-relu", plugins=["broken_wgflow_plugin"])
    (tmp_path / "syntax_wgflow_plugin.py").write_text("def f(:\n")
    with pytest.raises(InputError, match="syntax error"):
        experiments.load("chizat-bach-relu", plugins=["syntax_wgflow_plugin"])
    (tmp_path / "dep_wgflow_plugin.py").write_text("import not_installed_anywhere_xyz\n")
    with pytest.raises(InputError, match="imports 'not_installed_anywhere_xyz', which is not installed"):
        experiments.load("chizat-bach-relu", plugins=["dep_wgflow_plugin"])
    with pytest.raises(InputError, match="list of module names"):
        experiments.load("chizat-bach-relu", ["plugins=3"])
