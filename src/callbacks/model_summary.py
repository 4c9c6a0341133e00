"""Lightning's model summary (names, types, parameter counts, train/eval mode) without its FLOPs column
and "Total FLOPs" line: Lightning counts FLOPs only for modules with an ``example_input_array``, which
the models here do not set, so both read 0."""
from __future__ import annotations

from pytorch_lightning.callbacks import RichModelSummary


class ModelSummary(RichModelSummary):
    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        from rich import get_console
        from rich.table import Table
        from pytorch_lightning.utilities.model_summary import get_human_readable_count

        console = get_console()
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, justify="right" if name in ("Params", "Params per Device") else "left",
                             style="dim" if name == " " else None)
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console.print(table)
        trainable = get_human_readable_count(int(trainable_parameters))
        frozen = get_human_readable_count(int(total_parameters - trainable_parameters))
        console.print(f"Trainable params: {trainable} · non-trainable: {frozen} · size {model_size:.1f} MB · "
                      f"modules in train mode: {total_training_modes['train']}, eval mode: {total_training_modes['eval']}")
