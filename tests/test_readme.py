"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    namespace = {}
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), namespace)

    if "bounds" in namespace:  # the AutoBound example: the bounds hold where it evaluates them
        import jax.numpy as jnp

        bounds = namespace["bounds"]
        assert float(bounds.lower(0.5)) <= float(jnp.exp(0.5)) <= float(bounds.upper(0.5))
    if "box" in namespace:  # the vector example: the bounds hold at a point of the box
        import jax.numpy as jnp

        box, x = namespace["box"], jnp.array([0.05, 0.95])
        value = jnp.exp(x[0]) * jnp.sin(x[1])
        assert float(box.lower(x)) <= float(value) <= float(box.upper(x))
    if "tx" in namespace:  # the SafeRate example: it trained
        batch, params = namespace["batch"], namespace["params"]
        assert float(namespace["loss_fn"](params, batch)) < 0.5 * float(jnp_mean_square(batch))


def jnp_mean_square(batch):
    import jax.numpy as jnp

    return jnp.mean(batch[1] ** 2)
