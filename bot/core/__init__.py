"""The pure core: domain types, errors, text folding, windows, outbox rules, paging."""
