"""TrainingQueue: one training at a time, the rest in line with their place, cancel in or out of line."""

import threading
import time

from petdream.training.queue import TrainingJob, TrainingQueue


def wait_until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_trainings_run_one_at_a_time_in_order_and_the_waiting_see_their_place():
    queue, ran, release = TrainingQueue(), [], {name: threading.Event() for name in "abc"}

    def work(job):
        ran.append(job.run_id)
        job.status = "running"
        release[job.run_id].wait(10)
        job.status = "finished"

    jobs = {name: queue.submit(TrainingJob(name, "session:x", name.upper(), 10), work) for name in "abc"}
    wait_until(lambda: ran == ["a"])
    assert [queue.position(name) for name in "abc"] == [0, 1, 2] and queue.position("zzz") is None
    release["a"].set()
    wait_until(lambda: ran == ["a", "b"])
    assert [queue.position(name) for name in "abc"] == [None, 0, 1] and jobs["a"].done
    release["b"].set()
    release["c"].set()
    wait_until(lambda: jobs["c"].done)
    assert ran == ["a", "b", "c"]


def test_cancel_takes_a_waiting_training_out_of_line_and_stops_a_running_one():
    queue, started, stop = TrainingQueue(), threading.Event(), threading.Event()

    def work(job):
        job.on_cancel = stop.set  # what the service wires to the trainer's cancel()
        job.status = "running"
        started.set()
        stop.wait(10)
        job.status = "cancelled"

    running = queue.submit(TrainingJob("run", "session:x", "Rex", 10), work)
    waiting = queue.submit(TrainingJob("wait", "session:x", "Mia", 10), work)
    started.wait(10)
    assert queue.cancel("wait") and waiting.status == "cancelled" and queue.position("wait") is None
    assert queue.cancel("run")
    wait_until(lambda: running.done)
    assert running.status == "cancelled" and not queue.cancel("run")  # nothing left to cancel


def test_a_crashing_training_fails_with_its_reason_and_the_next_one_still_runs():
    queue = TrainingQueue()

    def crash(job):
        raise RuntimeError("CUDA error: an illegal memory access")

    def fine(job):
        job.status = "finished"

    broken = queue.submit(TrainingJob("x", "session:x", "Rex", 10), crash)
    after = queue.submit(TrainingJob("y", "session:x", "Mia", 10), fine)
    wait_until(lambda: after.done)
    assert broken.status == "failed" and "illegal memory access" in broken.message


def test_a_jobs_summary_tells_the_person_where_it_stands():
    job = TrainingJob("r", "session:x", "Bruno", 20)
    assert job.summary(2) == "Waiting: 2 trainings ahead of Bruno's."
    assert job.summary(1) == "Waiting: 1 training ahead of Bruno's."
    job.status, job.message = "running", "Preparing 4 class images."
    assert job.summary(0) == "Preparing to train Bruno. Preparing 4 class images."
    job.step, job.loss, job.eta_seconds = 5, 0.1234, 12.4
    assert job.summary(0) == "Training Bruno: step 5 of 20, loss 0.1234, about 12 s left."
    job.eta_seconds = 0.4  # not "about 0 s left"
    assert job.summary(0) == "Training Bruno: step 5 of 20, loss 0.1234, almost done."
    job.eta_seconds = 3000  # an sd15 training on a slow machine: not "about 3000 s left"
    assert job.summary(0) == "Training Bruno: step 5 of 20, loss 0.1234, about 50 min left."
    job.resumed_from = 3  # its chart starts at step 1: the line says where this session went on
    assert job.summary(0) == "Training Bruno: step 5 of 20 (went on from step 3), loss 0.1234, about 50 min left."
    job.status, job.message = "failed", "The loss became nan at step 6."
    assert job.summary(None) == "❌ The loss became nan at step 6."
