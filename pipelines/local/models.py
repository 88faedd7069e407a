"""What a SageMaker model runs: its container, found through its model package when it names one."""

from __future__ import annotations


def model_container(sagemaker, model_name: str) -> dict:
    """The model's (first) container: {"Image", "ModelDataUrl", …}, as SageMaker resolves a ModelPackageName."""
    model = sagemaker.describe_model(ModelName=model_name)
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    if not container.get("ModelDataUrl") and container.get("ModelPackageName"):
        package = sagemaker.describe_model_package(ModelPackageName=container["ModelPackageName"])
        container = package["InferenceSpecification"]["Containers"][0]
    return container
