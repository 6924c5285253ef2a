"""The inference runtime: what runs inside a pipeline's call once ILF, the corrector or the paper cache is
attached.

    attached.py         what is attached to a transformer (resolve_target, get_runtime, get_cache, the refusals)
    clock.py            where a call sits in the pipeline's schedule (SchedulerClock, StepInfo)
    planner.py          the call planner: one model hook that locates each call and hands it to an executor
    ilf_loop.py         executor 1: ILF's feedback loop (eq. 2-3) on the backbone's own blocks
    paper_cache.py      executor 2: the paper's caching baseline (apply_cache / remove_cache)
    corrector.py        executor 3: the corrector of TaylorSeer's forecast (apply_corrector)
    corrector_state.py  the corrector's per-branch cache state (shared with the pipeline-native trainer)
    counting.py         the block-forward counter (count_block_forwards)

The user's calls stay one level up: `ilf.pipeline` (apply_ilf / remove_ilf / save_feedback), the configs
(`ilf.config`, `ilf.corrector_config`) and the feedback files (`ilf.feedback`); `from ilf import ...` finds all.
"""
