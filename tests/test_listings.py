"""saae_lib.listings: the chapters show the library's real, current code."""

import inspect

from saae_lib import listings, models


def test_a_listing_is_the_source_under_where_it_lives(capsys):
    text = listings.listing(models.Autoencoder.training_step)
    assert text.startswith("# saae_lib/models.py: Autoencoder.training_step\ndef training_step(self")
    assert text.splitlines()[1:] == [line[4:] for line in inspect.getsource(models.Autoencoder.training_step)
                                     .splitlines()]  # dedented by the method's four spaces
    listings.show(models.reconstruction_loss, models.balance_penalty)
    out = capsys.readouterr().out
    assert out == listings.listing(models.reconstruction_loss) + "\n" + listings.listing(models.balance_penalty)


def test_a_decorated_function_is_listed_where_it_is_defined():
    """models.frozen is wrapped by @contextmanager, whose wrapper lives in contextlib.py: the listing names the
    library's file, and shows the decorator with the function."""
    text = listings.listing(models.frozen)
    assert text.startswith("# saae_lib/models.py: frozen\n@contextmanager\ndef frozen(")
