"""Data-free structured pruning (`edgeport convert --prune RATIO`): coupled channel groups from
torch-pruning's dependency graph, removed in a criterion's order with widths chosen globally, then
recovered by distillation from the unpruned model on synthetic inputs."""

from edgeport.quant.prune.options import PruneOptions, prune_options
from edgeport.quant.prune.prune import PruneResult, prune_module
from edgeport.quant.prune.section import PruningSection

__all__ = ["PruneOptions", "PruneResult", "PruningSection", "prune_module", "prune_options"]
