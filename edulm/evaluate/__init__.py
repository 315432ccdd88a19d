"""Evaluation: perplexity, the lm-evaluation-harness protocol, public baselines and their comparison.

``perplexity`` scores text or held-out shards; ``harness`` runs lm-eval with the reference protocol;
``baselines`` runs the same protocol on public models; ``compare`` turns results into win rates and
a report; ``budgets`` holds the training-token table that puts the scores in context.
"""
