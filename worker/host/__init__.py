"""One host instance: routing rules, the message handler and consumer lifecycle, the supervisor's duties."""
