console.log('rrt');
