"""The privacy gate: pseudonyms, the quasi-identifier policy, suppression, differential privacy and the
refusal of identifying fields. Polis counts, it never watches."""
