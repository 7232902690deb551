import math

import pytest

from edit_search.errors import InputError
from edit_search.search_spaces import Recipe, Region

GOOD = {
    "method": "greedy",
    "target": "true",
    "polarity": "absolute",
    "pixels": 24,
    "operation": "push",
    "strength": 1.0,
    "regions": [{"x": 3, "y": 4, "width": 5, "height": 6, "operation": "darken", "strength": 0.5}],
    "keep": [0, 783],
}


def test_recipe_from_dict_round_trip_equal() -> None:
    recipe = Recipe.from_dict(GOOD)
    assert recipe.regions == (Region(3, 4, 5, 6, "darken", 0.5),)
    assert Recipe.from_dict(recipe.to_dict()) == recipe


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("keep", [99999], r"keep\[0\] is 99999; it must be a whole number from 0 to 783"),
        ("keep", "12", r"keep is '12'; it must be a list"),
        ("regions", [[1, 2, 3]], r"regions\[0\] is \[1, 2, 3\]; it must be an object"),
        ("regions", 5, r"regions is 5; it must be a list"),
        ("pixels", -5, r"pixels is -5; it must be a whole number from 1 to 784"),
        ("pixels", 100000, r"pixels is 100000; it must be a whole number from 1 to 784"),
        ("pixels", 2.5, r"pixels is 2.5"),
        ("pixels", True, r"pixels is True"),
        ("strength", math.nan, r"strength is nan; it must be a finite number in \(0, 1\]"),
        ("strength", math.inf, r"strength is inf"),
        ("strength", 0.0, r"strength is 0.0"),
        ("strength", "1", r"strength is '1'"),
        ("method", "magic", r"method is 'magic'; it must be one of integrated_gradients"),
        ("target", "other", r"target is 'other'; it must be one of true, predicted, margin"),
        ("polarity", "up", r"polarity is 'up'"),
        ("operation", "blur", r"operation is 'blur'; it must be one of lighten, darken, push"),
    ],
)
def test_recipe_from_dict_bad_field_raises_one_line_naming_it(
    field: str, value: object, match: str
) -> None:
    with pytest.raises(InputError, match=match) as caught:
        Recipe.from_dict({**GOOD, field: value})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"x": 28}, r"regions\[0\]\.x is 28; it must be a whole number from 0 to 27"),
        (
            {"x": 25, "width": 5},
            r"regions\[0\]\.width is 5; it must be a whole number from 1 to 3",
        ),
        ({"height": 0}, r"regions\[0\]\.height is 0"),
        ({"operation": "push"}, r"regions\[0\]\.operation is 'push'; it must be one of lighten"),
        ({"strength": -1}, r"regions\[0\]\.strength is -1"),
        ({"colour": 1}, r"regions\[0\]\.colour is 1; it must be absent"),
    ],
)
def test_recipe_from_dict_bad_region_raises_naming_the_region_field(
    change: dict[str, object], match: str
) -> None:
    region = {**GOOD["regions"][0], **change}  # type: ignore[index]
    with pytest.raises(InputError, match=match):
        Recipe.from_dict({**GOOD, "regions": [region]})


def test_recipe_from_dict_missing_field_raises_naming_it() -> None:
    data = {k: v for k, v in GOOD.items() if k != "strength"}
    with pytest.raises(InputError, match="recipe field strength is missing"):
        Recipe.from_dict(data)


def test_recipe_from_dict_not_an_object_raises() -> None:
    with pytest.raises(InputError, match="recipe must be a JSON object; received list"):
        Recipe.from_dict([1, 2])  # type: ignore[arg-type]
