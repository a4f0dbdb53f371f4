"""v1.10.1's path of the font its grids are labelled with; the tests name one by ALLOY_TEST_FONT."""

import os

roboto_ttf_file = os.environ.get("ALLOY_TEST_FONT", "")
