DROP TABLE notifier_dead_letters;
