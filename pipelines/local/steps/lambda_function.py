"""Lambda step: invokes one of the product's own Lambda functions in-process, as the local stack runs the deploy one.

The request is what SageMaker sends Lambda: the step's resolved Arguments as the event, to its FunctionArn.
The function is recognised by its name (the template names each `<pipeline name><suffix>`); its handler's
behaviour runs here with the engine's clients. The properties hold the OutputParameters the step declares,
read as `Steps.<name>.OutputParameters['<key>']`.
"""

from __future__ import annotations

from lambdas.find_champion import find_champion
from lambdas.publish_live_quality import publish
from pipelines.contract import CHAMPION_FUNCTION_SUFFIX, PUBLISH_FUNCTION_SUFFIX
from pipelines.local.errors import StepFailure
from pipelines.local.steps.base import Job

IN_PROCESS = {  # function-name suffix → (event, job) → the handler's result
    CHAMPION_FUNCTION_SUFFIX: lambda event, job: find_champion(event, job.sagemaker),
    PUBLISH_FUNCTION_SUFFIX: lambda event, job: publish(event, job.s3, job.cloudwatch),
}


def run(arguments: dict, job: Job) -> dict:
    function_arn = arguments["FunctionArn"]
    name = function_arn.rsplit(":", 1)[-1]
    invoke = next((call for suffix, call in IN_PROCESS.items() if name.endswith(suffix)), None)
    if invoke is None:
        raise StepFailure(f"local mode runs the product's own Lambda functions (names ending "
                          f"{', '.join(IN_PROCESS)}), not {function_arn}")
    try:
        result = invoke(arguments["Payload"], job)
    except ValueError as exc:
        raise StepFailure(f"{name}: {exc}") from None
    job.log(f"{name} returned {result}")
    outputs = {}
    for declared in arguments.get("OutputParameters", []):
        key = declared["OutputName"]
        if key not in result:
            raise StepFailure(f"{name} returned no output parameter {key!r}; it returned {sorted(result)}")
        outputs[key] = result[key]
    return {"FunctionArn": function_arn, "OutputParameters": outputs}
