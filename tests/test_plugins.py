"""Plugins: a package installed into a temporary environment adds a loader (and so a
``--model`` spec) and a model family through its entry points, and the API and the command
line use them with no other change."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from _cli import ENV

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "captum-paths-toy-plugin"
        version = "0.1"

        [tool.setuptools]
        packages = ["toy_plugin"]

        [project.entry-points."captum_paths.loaders"]
        toy = "toy_plugin.loading:load"

        [project.entry-points."captum_paths.families"]
        toy-vit = "toy_plugin.family:ToyFamily"

        [project.entry-points."captum_paths.path_methods"]
        toy-path = "toy_plugin.methods:ToyPath"
    """,
    "toy_plugin/__init__.py": "",
    "toy_plugin/loading.py": '''
        """A loader of the demo model under another name, as a plugin would ship one."""
        from captum_paths.demo import demo_transform, load_demo_model


        def load(request):
            if request.name != "digits":
                raise ValueError(f"the toy plugin has one model, 'toy:digits'; got {request.spec!r}")
            model = load_demo_model()
            model.toy = True  # what the toy family recognises
            return model, demo_transform()
    ''',
    "toy_plugin/methods.py": '''
        """A path method of the toy plugin: per layer, the units ``first .. first + k - 1``."""
        import torch

        from captum_paths.search import PathAttribution
        from captum_paths.search.base import MethodOption, positive_int


        class ToyPath(PathAttribution):
            name = "toy-path"
            options = {"first": MethodOption("a positive int", positive_int, default=1)}

            def _select(self, ctx, first):
                layers = [(torch.arange(ctx.k) + first) % width for width in ctx.widths]
                return torch.stack(layers).expand(ctx.batch, -1, -1).to(ctx.device), None, {}
    ''',
    "toy_plugin/family.py": '''
        """A family adapter for the toy plugin's models: their FFN neurons, read at the class token."""
        from captum_paths.model.families import FamilyAdapter, SiteSpec
        from captum_paths.model.tokens import TokenSelection


        class ToyFamily(FamilyAdapter):
            name = "toy-vit"

            def sites(self, model):
                if not getattr(model, "toy", False):
                    return None
                return SiteSpec([block.mlp.act for block in model.blocks], "output", TokenSelection("cls"))
    ''',
}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The environment of a subprocess in which the toy plugin is installed (``pip install --target``)."""
    root = tmp_path_factory.mktemp("plugin")
    source, target = root / "src", root / "site"
    for name, text in PLUGIN.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(textwrap.dedent(text).lstrip())
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    path = os.pathsep.join(filter(None, [str(target), ENV.get("PYTHONPATH")]))
    return dict(ENV, PYTHONPATH=path)


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "captum_paths", *map(str, args)], capture_output=True, text=True,
                          env=env)


def test_an_installed_loader_and_method_reach_the_cli(plugin_env, demo_images_2, tmp_path):
    out = tmp_path / "run"
    done = _cli(plugin_env, "extract", "--model", "toy:digits", "--data", demo_images_2, "--out", out, "--method",
                "random", "toy-path", "--method-option", "toy-path.first=5", "--limit", "4", "--quiet")
    assert done.returncode == 0, done.stderr
    settings = json.loads((out / "run.json").read_text())
    assert settings["model"] == "toy:digits" and settings["methods"] == ["random", "toy-path"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    toy = [r for r in records if r["method"] == "toy-path"]
    assert len(records) == 8 and len(toy) == 4
    assert all(r["path"] == [[5]] * 6 and r["settings"]["first"] == 5 for r in toy)
    # the explorer and the report know the method too
    done = _cli(plugin_env, "report", "--run", out, "--heatmaps", "0", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "toy-path" in (out / "summary.md").read_text()
    # its errors are one line like the built-in loaders'
    done = _cli(plugin_env, "extract", "--model", "toy:cats", "--data", demo_images_2, "--out", tmp_path / "other",
                "--quiet")
    assert done.returncode == 2 and "the toy plugin has one model" in done.stderr and "Traceback" not in done.stderr


def test_without_the_plugin_the_spec_and_method_are_unknown(demo_images_2, tmp_path):
    done = _cli(ENV, "extract", "--model", "toy:digits", "--data", demo_images_2, "--out", tmp_path / "run", "--quiet")
    assert done.returncode == 2 and "unknown model spec prefix 'toy:'" in done.stderr, done.stderr
    done = _cli(ENV, "extract", "--model", "demo", "--data", demo_images_2, "--out", tmp_path / "run", "--method",
                "toy-path", "--quiet")
    assert done.returncode == 2 and "unknown path method 'toy-path'" in done.stderr, done.stderr


def test_a_plugin_that_fails_to_load_is_named(plugin_env, tmp_path):
    broken = tmp_path / "broken"
    (broken / "toy_plugin").mkdir(parents=True)
    site = plugin_env["PYTHONPATH"].split(os.pathsep)[0]
    for dist in os.listdir(site):  # the installed metadata, pointing at a module that does not import
        if dist.endswith(".dist-info"):
            os.symlink(os.path.join(site, dist), broken / dist)
    (broken / "toy_plugin" / "__init__.py").write_text("")
    (broken / "toy_plugin" / "loading.py").write_text("import no_such_package\n")
    env = dict(plugin_env, PYTHONPATH=str(broken))
    done = subprocess.run([sys.executable, "-c", "from captum_paths.model.loading import load_model; "
                           "load_model('demo')"], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "plugin 'toy' of captum_paths.loaders (toy_plugin.loading:load) failed to load: ModuleNotFoundError" \
        in done.stderr


def test_an_installed_family_finds_the_sites_of_its_models(plugin_env):
    code = ("from captum_paths.model.loading import load_model\n"
            "from captum_paths.model.sites import NeuronSites\n"
            "from captum_paths.demo import load_demo_model\n"
            "print(NeuronSites.from_model(load_model('toy:digits')[0]).family,"
            " NeuronSites.from_model(load_demo_model()).family)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plugin_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["toy-vit", "timm"]  # the plugin's models only: asked first, it claims no other
