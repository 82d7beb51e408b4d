"""From result files to what people read: leaderboards (collected, ranked, rendered in every format), comparisons,
seed aggregates, RobustBench-style exports, figures (``plots``) and the HTML report (``html``). Reads result files
only: nothing here runs a model or an attack."""
