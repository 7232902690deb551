import optuna
import pytest

from edit_search.data.images import load_image
from edit_search.optimizer import RECIPE_KEY, EditContext, create_or_resume, optimize
from edit_search.optimizer._loop import prune
from edit_search.runs import settings_for
from edit_search.search_spaces import Recipe, SearchSpace, apply_recipe


@pytest.fixture
def ctx(model, image_path) -> EditContext:
    image = load_image(image_path)
    return EditContext(model, image.pixels, image.label)


def _study(image_path, space: SearchSpace, min_margin: float = 1.0) -> optuna.Study:
    settings = settings_for(
        load_image(image_path),
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=min_margin,
        sampler="tpe",
        space=space,
    )
    return create_or_resume(optuna.storages.InMemoryStorage(), settings)


def test_prune_undoes_pixels_and_keeps_the_margin(ctx) -> None:
    attribution = ctx.attributions.get("occlusion_white", "margin")
    recipe = Recipe("occlusion_white", "margin", "positive", 60, "lighten", 1.0)
    edit = apply_recipe(ctx.pixels, attribution, recipe)
    assert float(ctx.score(edit[None]).margin[0]) >= 0.5

    keep = prune(ctx, edit, 0.5)
    pruned = apply_recipe(ctx.pixels, attribution, Recipe(**{**recipe.__dict__, "keep": keep}))
    scores = ctx.score(pruned[None])
    assert len(keep) > 0
    assert float(scores.margin[0]) >= 0.5
    assert int((pruned != ctx.pixels).sum()) == int((edit != ctx.pixels).sum()) - len(keep)


def test_optimize_every_trial_recipe_reapplies_to_its_told_values(ctx, image_path) -> None:
    space = SearchSpace(methods=("integrated_gradients", "occlusion_white"), max_regions=0)
    study = _study(image_path, space)
    optimize(study, ctx, 12)
    assert len(study.trials) == 12
    for trial in study.trials:
        recipe = Recipe.from_dict(trial.user_attrs[RECIPE_KEY])
        edit = apply_recipe(ctx.pixels, ctx.attributions.get(recipe.method, recipe.target), recipe)
        scores = ctx.score(edit[None])
        assert float(scores.margin[0]) == pytest.approx(trial.values[0], abs=1e-5)
        assert float(scores.preserved[0]) == trial.values[1]


def test_optimize_last_trial_polishes_the_best_safe_edit(ctx, image_path) -> None:
    space = SearchSpace(methods=("occlusion_white",), operations=("lighten",), max_regions=0)
    study = _study(image_path, space)
    optimize(study, ctx, 6)
    last = study.trials[-1]
    assert last.user_attrs["fixed_keep"], "the prune found nothing to undo"
    assert last.values[0] >= 1.0
    assert last.values[1] > max(t.values[1] for t in study.trials[:-1] if t.values[0] >= 1.0)


def test_optimize_warm_start_puts_greedy_push_right_after_hand_recipes(ctx, image_path) -> None:
    study = _study(image_path, SearchSpace(), min_margin=0.0)
    optimize(study, ctx, 5, polish=False)
    assert study.trials[0].user_attrs[RECIPE_KEY]["pixels"] == round(0.3 * 784)
    greedy = study.trials[3].user_attrs[RECIPE_KEY]
    assert (greedy["method"], greedy["operation"]) == ("greedy", "push")
    # Greedy one-pixel changes fix this digit with very few of them.
    assert study.trials[3].values[0] > 0
    assert study.trials[3].values[1] >= 1 - 5 / 784


def test_optimize_patience_stops_after_that_many_trials_without_improvement(
    ctx, image_path
) -> None:
    study = _study(image_path, SearchSpace(max_regions=0))
    optimize(study, ctx, 48, trials_per_batch=1, polish=False, patience=5)

    told = [t for t in study.trials if t.values is not None]
    assert len(told) < 48
    best, improved_at = None, None
    for index, trial in enumerate(told):
        margin_value, preserved_value = trial.values
        if margin_value >= 1.0 and preserved_value >= 0.6:
            if best is None or (preserved_value, margin_value) > best:
                best, improved_at = (preserved_value, margin_value), index
    assert improved_at is not None
    assert len(told) == improved_at + 1 + 5


def test_optimize_without_patience_runs_every_trial(ctx, image_path) -> None:
    study = _study(image_path, SearchSpace(max_regions=0))
    optimize(study, ctx, 12, polish=False)
    assert len(study.trials) == 12
