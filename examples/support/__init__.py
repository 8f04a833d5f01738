"""A support line: answers questions from its own FAQ file and hands the caller over
to a person after two misunderstandings in a row.

    turnchart serve --registry examples.support.registry:registry \\
        --config examples/support/config.yaml
"""
