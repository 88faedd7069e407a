"""The CloudFormation template: where it is, and a loader that understands CloudFormation's short tags."""

from __future__ import annotations

from pathlib import Path

TEMPLATE_PATH = Path(__file__).with_name("template.yaml")


def template_text(path: Path = TEMPLATE_PATH) -> str:
    return path.read_text()


def load_template(text: str | None = None) -> dict:
    """The template as plain data; `!Ref X` becomes {"Ref": "X"}, `!Sub …` becomes {"Fn::Sub": …}, and so on."""
    import yaml

    class CloudFormationLoader(yaml.SafeLoader):
        pass

    def short_tag(loader, tag_suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if tag_suffix in ("Ref", "Condition"):
            return {tag_suffix: value}
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{tag_suffix}": value}

    CloudFormationLoader.add_multi_constructor("!", short_tag)
    return yaml.load(template_text() if text is None else text, Loader=CloudFormationLoader)  # a SafeLoader subclass
