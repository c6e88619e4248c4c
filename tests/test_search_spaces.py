import pytest
import yaml

from search_spaces import (
    BUILTIN_DIR,
    SpaceError,
    apply_overrides,
    format_spaces,
    get_space,
    load_space_file,
    parse_space,
    space_names,
)

SPACE = yaml.safe_load((BUILTIN_DIR / "cifar.yaml").read_text())


def test_registry_lists_cifar_and_parses_it():
    assert "cifar" in space_names()
    space = get_space("cifar")
    names = {p.name for p in space.params}
    assert {"lr", "momentum", "weight_decay", "batch_size", "label_smoothing", "width"} <= names
    assert space.param("lr").kind == "loguniform"
    assert space.param("weight_decay").kind == "loguniform"
    for p in space.params:
        assert p.description, p.name


def test_unknown_space_names_the_known_ones():
    with pytest.raises(SpaceError, match="unknown search space 'nope'.*cifar"):
        get_space("nope")


def test_format_lists_bounds_and_units():
    text = format_spaces()
    assert "cifar" in text and "log[3, 30]" in text and "per 1024 examples" in text


@pytest.mark.parametrize(
    ("override", "kind", "shown"),
    [
        ("lr=1:2", "loguniform", "log[1, 2]"),
        ("batch_size=64,128", "choice", "{64, 128}"),
        ("momentum=0.9", "fixed", "= 0.9"),
        ("label_smoothing=0:0.1", "uniform", "[0, 0.1]"),
        ("lookahead=false", "fixed", "= False"),
        ("lookahead=true,false", "choice", "{True, False}"),
        ("flip=random", "fixed", "= random"),
    ],
)
def test_overrides(override, kind, shown):
    space = apply_overrides(get_space("cifar"), [override])
    p = space.param(override.split("=")[0])
    assert (p.kind, p.describe()) == (kind, shown)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=2:1", "low .2. must be below high .1."),
        ("lr=-1:1", "must be > 0"),
        ("lr=0", "must be > 0"),
        ("weight_decay=0:0.1", "must be > 0"),
        ("momentum=-0.5:0.9", "outside the allowed range"),
        ("label_smoothing=0.5,1.5", "outside the allowed range"),
        ("batch_size=0,64", "must be > 0"),
        ("batch_size=64:128", "is a choice"),
        ("nope=1", "has no parameter 'nope'"),
        ("lr", "must look like NAME="),
        ("lr=a:b", "bounds must be numbers"),
        ("flip=sideways", "'sideways' is not one of alternate, random, none"),
        ("arch=vgg", "'vgg' is not one of airbench, resnet18"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(SpaceError, match=message):
        apply_overrides(get_space("cifar"), [override])


def test_malformed_space_data_is_refused():
    raw = {**SPACE, "params": {**SPACE["params"], "lr": {"kind": "loguniform", "low": 1, "high": 1, "description": ""}}}
    with pytest.raises(SpaceError, match="low .1. must be below high"):
        parse_space(raw)
    raw = {**SPACE, "budget": {**SPACE["budget"], "grace_period": 99}}
    with pytest.raises(SpaceError, match="--grace-period is 99"):
        parse_space(raw)
    raw = {**SPACE, "smoke": {**SPACE["smoke"], "params": {"nope": 1}}}
    with pytest.raises(SpaceError, match="no parameter 'nope'"):
        parse_space(raw)
    for bad in (0, 2.5, "4", True):
        with pytest.raises(SpaceError, match="trials_per_gpu is .* must be a whole number >= 1"):
            parse_space({**SPACE, "trials_per_gpu": bad})


def test_trials_per_gpu_is_part_of_the_space():
    assert get_space("cifar").trials_per_gpu == 4
    assert parse_space({k: v for k, v in SPACE.items() if k != "trials_per_gpu"}).trials_per_gpu == 1
    assert "4 trial(s) per GPU" in format_spaces()


def test_smoke_overrides_and_param_space():
    from tuner.driver.space import param_space

    space = get_space("cifar")
    smoke = apply_overrides(space, space.smoke.params)
    config = param_space(smoke, max_epochs=3, seed=7)
    assert config["epochs"] == 3 and config["seed"] == 7 and config["arch"] == "airbench"
    assert set(config["width"].categories) == {0.125, 0.25}
    fixed = param_space(apply_overrides(space, ["lr=5"]), max_epochs=3, seed=0)
    assert fixed["lr"] == 5
    assert 3.0 <= param_space(space, max_epochs=1, seed=0)["lr"].sample() <= 30.0


def test_the_builtin_space_is_a_yaml_file():
    space = get_space("cifar")
    assert (space.task, space.metric, space.mode) == ("cifar", "val_acc", "max")
    assert space.ref == "cifar" and space.source == ""  # a built-in is found again by its name
    assert load_space_file(BUILTIN_DIR / "cifar.yaml") == space


def write_space(tmp_path, **changes):
    raw = {**SPACE, **changes}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}))
    return path


def test_a_space_file_of_ones_own(tmp_path):
    path = write_space(tmp_path, name="mine", metric="val_loss", mode="min")
    space = get_space(str(path))
    assert (space.name, space.metric, space.mode, space.ref) == ("mine", "val_loss", "min", str(path))
    assert apply_overrides(space, ["lr=1:2"]).param("lr").describe() == "log[1, 2]"  # --param works on it too
    unnamed = write_space(tmp_path, name=None)
    assert get_space(str(unnamed)).name == "mine"  # the file's stem


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "maximum"}, "mine.yaml: space 'mine': mode is 'maximum', but must be max .higher is better. or min"),
        ({"metric": "val acc"}, "metric is 'val acc', but must be the name of a metric"),
        ({"task": "mnist"}, "task is .mnist., but must be one of the built-in tasks .cifar, imagefolder. or your"),
        ({"budjet": {}}, "unknown key 'budjet'; the keys allowed there are: name, description"),
        ({"params": {"lr": {"kind": "uniform", "low": 1, "hgh": 2, "description": "x"}}},
         "parameter 'lr': unknown key 'hgh'"),
        ({"params": {"lr": {"low": 1, "high": 2}}}, "parameter 'lr' needs a kind"),
        ({"params": {"bs": {"kind": "choice", "choices": 64, "description": "x"}}}, "choices must be a list"),
        ({"budget": {"num_samples": 4, "max_epochs": 2, "grace_period": 1}}, "budget lacks reduction_factor"),
        ({"budget": {"num_samples": "4", "max_epochs": 2, "grace_period": 1, "reduction_factor": 2}},
         "num_samples is '4', but must be a whole number"),
    ],
)
def test_errors_in_a_space_file_name_the_file_and_the_key(tmp_path, changes, message):
    path = write_space(tmp_path, name="mine", **changes)
    with pytest.raises(SpaceError, match=message):
        get_space(str(path))


def test_a_space_file_that_is_not_yaml_or_not_there(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nparams:\n  lr: {kind: loguniform\n")
    with pytest.raises(SpaceError, match=r"broken.yaml: not valid YAML at line \d+, column \d+ .*fix the syntax"):
        get_space(str(bad))
    with pytest.raises(SpaceError, match="no space file .*missing.yaml: check the path, or use a built-in space"):
        get_space(str(tmp_path / "missing.yaml"))
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(SpaceError, match="a space file holds keys such as name, task, metric, params"):
        get_space(str(listing))


def test_every_builtin_task_is_known_to_space_files_and_every_builtin_space_parses():
    from search_spaces._schema import TASKS
    from trainables.loading import BUILTIN, load_task

    assert set(TASKS) == set(BUILTIN)
    for name in space_names():
        space = get_space(name)
        assert space.task in BUILTIN and load_task(space.task) is not None


def _conditional(**width_changes):
    raw = yaml.safe_load((BUILTIN_DIR / "imagefolder.yaml").read_text())
    raw["params"]["width"].update(width_changes)
    return raw


def test_conditional_parameters_are_dropped_where_inactive():
    from search_spaces import conditions, drop_inactive, mark_inactive

    space = get_space("imagefolder")
    conds = conditions(space)
    assert conds == {"width": {"model": ("small_cnn",)}}
    assert drop_inactive({"model": "resnet18", "width": 2.0, "lr": 0.01}, conds) == {"model": "resnet18", "lr": 0.01}
    assert drop_inactive({"model": "small_cnn", "width": 2.0}, conds) == {"model": "small_cnn", "width": 2.0}
    assert mark_inactive({"model": "resnet18"}, conds) == {"model": "resnet18", "width": "inactive"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"when": {"lr": 0.01}}, "when lr: 'lr' is loguniform; a condition needs a choice or a fixed value"),
        ({"when": {"pretrained": True}}, "when pretrained: True is not one of its values .False."),
        ({"when": {"model": "vgg"}}, "when model: 'vgg' is not one of its values .small_cnn, resnet18."),
        ({"when": {"nope": 1}}, "when nope: 'nope' is not another parameter of this space"),
        ({"when": {"width": 1.0}}, "when width: 'width' is not another parameter of this space"),
    ],
)
def test_bad_conditions_are_refused(changes, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(_conditional(**changes))


def test_optuna_suggests_a_conditional_parameter_only_where_it_is_active():
    import optuna

    from tuner.driver.space import OptunaSpace, param_space

    space = get_space("imagefolder")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    define = OptunaSpace(space)
    seen = set()
    for _ in range(12):
        trial = study.ask()
        define(trial)
        seen.add(trial.params["model"])
        assert ("width" in trial.params) == (trial.params["model"] == "small_cnn"), trial.params
        study.tell(trial, 0.5)
    assert seen == set(space.param("model").choices)
    fixed = param_space(space, max_epochs=3, seed=0, sampled=False)
    assert fixed["pretrained"] is False and "lr" not in fixed and fixed["epochs"] == 3  # Optuna suggests the rest


def test_conditions_may_name_parameters_listed_after_them_but_not_go_round_in_a_circle():
    raw = _conditional()
    params = raw["params"]
    raw["params"] = {"width": params.pop("width"), **params}  # listed before the model it depends on
    space = parse_space(raw)
    names = [p.name for p in space.params]
    assert names.index("model") < names.index("width")  # ordered for sampling
    raw["params"]["model"]["when"] = {"width": [1.0]}
    with pytest.raises(SpaceError, match="the conditions of .*width.*model.* depend on each other in a circle"):
        parse_space(raw)
