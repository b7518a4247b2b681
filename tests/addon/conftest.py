"""The add-on tests start a real server: reuse the server tests' bundled-model fixtures."""

from tests.server.conftest import bundled_data_dir, seed_data_dir

__all__ = ["bundled_data_dir", "seed_data_dir"]
