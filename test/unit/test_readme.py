"""The README's parameter tables are the ones generated from ros/params.py (no drift)."""
from pathlib import Path
import re

import pytest

README = Path(__file__).resolve().parents[2] / 'README.md'


def test_readme_parameter_tables_match_param_specs():
    pytest.importorskip('rclpy', reason='params.py builds ROS descriptors')
    from adaqual_ros.ros.params import render_markdown
    text = README.read_text()
    block = re.search(r'<!-- params:begin -->\n(.*?)\n<!-- params:end -->', text, re.S)
    assert block, 'README has no generated parameter block'
    assert block.group(1).strip() == render_markdown().strip().replace('### ', '#### ')
