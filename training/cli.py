"""`rgpt4d-sdk train`: P4D fine-tuning (`--config FILE.yaml`, also under torchrun) and `train export`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rgpt4d_sdk.cli_common import fail
from rgpt4d_sdk.cli_grammar import App, resolve_config
from rgpt4d_sdk.errors import RGPT4DError

train_app = App(help="P4D fine-tuning on domain data; export without the P4D branch.")


def _overrides(items: List[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {item!r}: use KEY=VALUE, e.g. run.max_steps=100")
        out[key.strip()] = yaml.safe_load(value)
    return out


@train_app.callback(invoke_without_command=True)
def train_cmd(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(None, metavar="CONFIG", help="Training config: a YAML path, or a "
                                         "shipped one by name (p4d_code_lora, p4d_paper, nuscenes_sensor)."),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a config value: section.key=value (repeatable)."),
    restart: bool = typer.Option(False, help="Delete the run folder's checkpoints and logs and start over."),
) -> None:
    """Fine-tune with P4D. Resumes from the run folder's latest checkpoint when the configuration is the same."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        fail(RGPT4DError("give --config FILE.yaml or a shipped config by name (p4d_code_lora, p4d_paper, "
                         "nuscenes_sensor)."))
    from .config import TrainConfig
    from .recipe import run

    try:
        cfg = TrainConfig.load(resolve_config(config, Path(__file__).resolve().parent / "configs", "training"),
                               _overrides(set_))
        run(cfg, restart=restart, log=typer.echo)
    except RGPT4DError as e:
        fail(e)


@train_app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="The run.out folder of a training run."),
    out: Path = typer.Option(..., metavar="DIR", help="Empty folder for the checkpoint (released layout)."),
    checkpoint: Optional[str] = typer.Option(None, metavar="STEP", help="step-NNNNNNN folder to export (default: the latest)."),
) -> None:
    """Write the released checkpoint layout: LoRA merged, every P4D module removed."""
    from .export import export_run

    try:
        path = export_run(run_dir, out, checkpoint)
    except RGPT4DError as e:
        fail(e)
    typer.echo(f"wrote {path} (P4D removed; load it with Engine.from_pretrained)")
