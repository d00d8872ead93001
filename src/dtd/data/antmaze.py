"""AntMaze data made here: a forward-running PPO Ant steered through a maze by rotating (and mirroring)
the world it is shown (``dtd data collect-maze --robot ant``).

D4RL's AntMaze data came from a goal-reaching Ant trained with SAC for 30M steps, which is not available
here. The RL Zoo's PPO Ant only runs forward, but the Ant's dynamics are invariant under a rotation about
the vertical axis and under the left-right mirror, so any heading is "forward" in a suitably transformed
world:

* to run in world direction theta, the policy is shown the torso quaternion pre-multiplied by a rotation
  of -theta about z and the root's linear velocity rotated by -theta (the root's angular velocity is
  reported in the body frame, which rotates with the torso, so it is left alone);
* the gait turns left easily but cannot start a large right turn, so for right turns the policy drives
  the mirror image of the Ant (legs 1<->4 and 2<->3 swapped, hip angles negated), in which the right turn
  is a left one, and its actions are mirrored back;
* the commanded direction adds feedback on the direction of the velocity, and the actions are scaled
  by 0.75 (a calmer gait flips less).

Waypoints come from a breadth-first search over the maze cells (dtd.data.maze.MazePlanner); the Ant
heads for the point 2.5 m ahead along the centre line of its cell path, pushed away from walls it comes
within 1.5 m of (its legs reach about 1 m, and an Ant against a wall stalls). Episodes end at the goal
(terminated, reward 1), at a flip (the torso upside down; truncated, marked ``flipped`` in the infos: the
policy cannot recover from one), or at the env's time limit (truncated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dtd.errors import DtdError

POLICY_OBS = 112  # the zoo PPO Ant: Ant-v5's 27 + 84 contact forces (zero: VecNormalize ignores them) + time
LOOKAHEAD = 2.5  # m along the path's centre line
ACTION_SCALE = 0.75
FEEDBACK_GAIN = 0.5  # extra heading per radian of velocity-direction error
FEEDBACK_LIMIT = np.pi / 4
VELOCITY_EMA = 0.5  # the gait sways: the heading is that of a lightly smoothed velocity
MIRROR_SWITCH = np.deg2rad(40.0)  # hysteresis on the heading error before the mirror flips
WALL_MARGIN = 1.5  # m: walls closer than this push the heading away (the Ant's legs reach about 1 m)
WALL_GAIN = 1.0
FLIP_UP_Z = 0.0  # the torso's up axis pointing below the horizon = flipped


# ---- the two symmetries, on MuJoCo state (qpos, qvel) and actions ---------------------------------


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def yaw_quat(angle: float) -> np.ndarray:
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def rotate_xy(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def rotate_state(qpos: np.ndarray, qvel: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The Ant's state turned by `angle` about the vertical axis through the origin. The free joint's
    linear velocity (qvel[0:3]) is in the world frame and turns with it; its angular velocity
    (qvel[3:6]) is in the body frame and does not change."""
    qpos, qvel = np.array(qpos, dtype=np.float64), np.array(qvel, dtype=np.float64)
    qpos[0:2] = rotate_xy(qpos[0:2], angle)
    qpos[3:7] = quat_mul(yaw_quat(angle), qpos[3:7])
    qvel[0:2] = rotate_xy(qvel[0:2], angle)
    return qpos, qvel


class AntMirror:
    """The reflection y -> -y of the Ant, derived from its MuJoCo model: each hinge's partner is the
    hinge whose body sits at the mirrored position, and its angle keeps or changes sign as the mirrored
    (axial) joint axis equals the partner's axis or its opposite (hips change sign, ankles keep it)."""

    def __init__(self, model) -> None:
        hinges = list(range(1, model.njnt))  # joint 0 is the free root
        self.perm = np.zeros(len(hinges), dtype=int)  # hinge i of the mirror = sign[i] * hinge perm[i]
        self.sign = np.zeros(len(hinges))
        for i, j in enumerate(hinges):
            pos = model.body_pos[model.jnt_bodyid[j]] * np.array([1, -1, 1])
            axis = -model.jnt_axis[j] * np.array([1, -1, 1])  # an axial vector under a reflection
            for k, other in enumerate(hinges):
                if np.allclose(model.body_pos[model.jnt_bodyid[other]], pos, atol=1e-9):
                    if np.allclose(model.jnt_axis[other], axis, atol=1e-9):
                        self.perm[i], self.sign[i] = k, 1.0
                    elif np.allclose(model.jnt_axis[other], -axis, atol=1e-9):
                        self.perm[i], self.sign[i] = k, -1.0
            if self.sign[i] == 0:
                raise DtdError(f"ant model: joint {j} has no mirror partner; the mirror needs a symmetric Ant")
        # actuator u drives hinge act_joint[u]
        self.act_joint = np.asarray(model.actuator_trnid[:, 0], dtype=int) - 1
        self.joint_act = np.argsort(self.act_joint)

    def joints(self, q: np.ndarray) -> np.ndarray:
        """Hinge values (angles or velocities, hinge order) of the mirror image."""
        return self.sign * np.asarray(q)[self.perm]

    def state(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qpos, qvel = np.array(qpos, dtype=np.float64), np.array(qvel, dtype=np.float64)
        qpos[1] = -qpos[1]
        qpos[3:7] = qpos[3:7] * np.array([1, -1, 1, -1])  # (w, x, y, z) -> (w, -x, y, -z)
        qpos[7:] = self.joints(qpos[7:])
        qvel[1] = -qvel[1]
        qvel[3:6] = qvel[3:6] * np.array([-1, 1, -1])  # axial: -M w
        qvel[6:] = self.joints(qvel[6:])
        return qpos, qvel

    def action(self, action: np.ndarray) -> np.ndarray:
        """An action (this model's actuator order) of the mirror image."""
        by_joint = np.asarray(action)[self.joint_act]
        return self.joints(by_joint)[self.act_joint]


# ---- the steered policy ------------------------------------------------------------------------


def wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def up_z(quat: np.ndarray) -> float:
    """z component of the torso's up axis (1 upright, -1 upside down)."""
    _, x, y, _ = quat
    return float(1.0 - 2.0 * (x * x + y * y))


class SteeredAnt:
    """The zoo's PPO Ant made to run in any world direction (module doc). ``__call__(qpos, qvel, theta)``
    returns the action for the maze Ant, in its own actuator order, before noise."""

    def __init__(self, policy_path: str | Path, model, seed: int = 0) -> None:
        import gymnasium as gym

        from dtd.data.collect import load_sb3_policy

        self.policy = load_sb3_policy(policy_path, deterministic=True, seed=seed)
        ref = gym.make("Ant-v5").unwrapped.model  # the actuator order the policy was trained with
        self.policy_act_joint = np.asarray(ref.actuator_trnid[:, 0], dtype=int) - 1
        self.mirror = AntMirror(model)
        self.reset()

    def reset(self) -> None:
        self.mirrored = False
        self.velocity = np.zeros(2)

    def policy_obs(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        obs = np.zeros(POLICY_OBS, dtype=np.float32)
        obs[:27] = np.concatenate([qpos[2:], qvel])
        obs[-1] = 1.0  # the time feature held at its start value (the faster gait, zoo README)
        return obs

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray, theta: float) -> np.ndarray:
        self.velocity = VELOCITY_EMA * self.velocity + (1 - VELOCITY_EMA) * np.asarray(qvel[:2], dtype=np.float64)
        v = self.velocity
        heading = np.arctan2(v[1], v[0]) if np.hypot(v[0], v[1]) > 0.2 else self._yaw(qpos)
        error = wrap(theta - heading)
        theta = theta + float(np.clip(FEEDBACK_GAIN * error, -FEEDBACK_LIMIT, FEEDBACK_LIMIT))
        if self.mirrored and error > MIRROR_SWITCH:
            self.mirrored = False
        elif not self.mirrored and error < -MIRROR_SWITCH:
            self.mirrored = True
        if self.mirrored:  # in the mirror image the target direction is -theta
            qpos, qvel = self.mirror.state(qpos, qvel)
            theta = -theta
        qpos, qvel = rotate_state(qpos, qvel, -theta)
        out = np.asarray(self.policy(self.policy_obs(qpos, qvel)), dtype=np.float64)
        by_joint = np.empty_like(out)
        by_joint[self.policy_act_joint] = out
        if self.mirrored:
            by_joint = self.mirror.joints(by_joint)
        return ACTION_SCALE * by_joint[self.mirror.act_joint]

    @staticmethod
    def _yaw(qpos: np.ndarray) -> float:
        w, x, y, z = qpos[3:7]
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class PathFollower:
    """The point LOOKAHEAD metres ahead along the centre line of the BFS cell path to the goal, and the
    direction to head for: towards that point, pushed away from walls closer than WALL_MARGIN."""

    def __init__(self, planner) -> None:
        self.planner = planner
        maze = planner.maze
        half = maze.maze_size_scaling / 2
        walls = np.argwhere(~planner.free)
        centres = np.array([maze.cell_rowcol_to_xy(np.array(c)) for c in walls], dtype=np.float64).reshape(-1, 2)
        self.wall_lo, self.wall_hi = centres - half, centres + half  # (W, 2) boxes

    def direction(self, xy: np.ndarray, goal: np.ndarray) -> float:
        xy = np.asarray(xy, dtype=np.float64)
        to = self.target(xy, goal) - xy
        to = to / max(float(np.linalg.norm(to)), 1e-9)
        nearest = np.clip(xy, self.wall_lo, self.wall_hi)  # closest point of each wall box
        away = xy - nearest
        dist = np.linalg.norm(away, axis=1)
        close = (dist < WALL_MARGIN) & (dist > 1e-9)
        if close.any():
            push = (away[close] / dist[close, None]) * ((WALL_MARGIN - dist[close]) / WALL_MARGIN)[:, None]
            to = to + WALL_GAIN * push.sum(axis=0)
        return float(np.arctan2(to[1], to[0]))

    def target(self, xy: np.ndarray, goal: np.ndarray) -> np.ndarray:
        xy, goal = np.asarray(xy, dtype=np.float64), np.asarray(goal, dtype=np.float64)
        cells = self.planner.path(self.planner.cell(xy), self.planner.cell(goal))
        if len(cells) <= 1:
            return goal
        line = [np.asarray(self.planner.maze.cell_rowcol_to_xy(np.array(c)), dtype=np.float64) for c in cells[:-1]]
        line.append(goal)
        # the closest point of the first segment (the current cell's centre line), then LOOKAHEAD further on
        a, b = line[0], line[1]
        seg = b - a
        u = float(np.clip(np.dot(xy - a, seg) / max(float(np.dot(seg, seg)), 1e-9), 0.0, 1.0))
        left, start = LOOKAHEAD, a + u * seg
        points = [start, *line[1:]]
        for a, b in zip(points[:-1], points[1:]):
            length = float(np.linalg.norm(b - a))
            if length >= left:
                return a + (b - a) * (left / max(length, 1e-9))
            left -= length
        return points[-1]


class AntDriver:
    """Drives the maze's Ant from its start to its goal: path target, steered policy, Gaussian noise."""

    def __init__(self, env, planner, policy_path: str | Path, noise: float, seed: int) -> None:
        self.ant_env = env.unwrapped.ant_env
        self.follower = PathFollower(planner)  # planner: dtd.data.maze.MazePlanner of env's maze
        self.steer = SteeredAnt(policy_path, self.ant_env.model, seed=seed)
        self.noise, self.rng = noise, np.random.default_rng(seed)

    def reset(self) -> None:
        self.steer.reset()

    def __call__(self, obs: dict) -> np.ndarray:
        theta = self.follower.direction(obs["achieved_goal"], obs["desired_goal"])
        action = self.steer(self.ant_env.data.qpos.copy(), self.ant_env.data.qvel.copy(), theta)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def flipped(self) -> bool:
        return up_z(self.ant_env.data.qpos[3:7]) < FLIP_UP_Z
