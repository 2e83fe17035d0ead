"""Background work: trainings and asynchronous predictions, run by one
``Runner`` (``runner``) configured by their ``Kind`` (``trainings``,
``jobs``), with the events they publish (``events``) and the webhooks
those make (``webhooks``)."""
