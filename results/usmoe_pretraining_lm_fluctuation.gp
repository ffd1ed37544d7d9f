set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_fluctuation.png.tmp.25646'
$s0 << EOD
2 80.3141276
3 60.9985352
4 44.9544271
5 30.5908203
6 16.40625
EOD
$s1 << EOD
2 67.0979818
3 29.5898438
4 15.1692708
5 9.35058594
6 5.55013021
EOD
$s2 << EOD
2 66.4754232
3 46.2198893
4 27.7832031
5 18.9453125
6 12.0727539
EOD
$s3 << EOD
2 62.6546224
3 29.6630859
4 18.5262044
5 12.6708984
6 7.59277344
EOD
$s4 << EOD
2 74.4018555
3 42.8548177
4 25.4394531
5 17.2973633
6 11.0392253
EOD
$s5 << EOD
2 66.0888672
3 38.8264974
4 20.0113932
5 11.6861979
6 7.29166667
EOD
$s6 << EOD
2 60.925293
3 33.8582357
4 20.304362
5 11.6536458
6 7.60498047
EOD
set title "USMoE, pre-training (language modelling): token choice vs\nexpert choice vs unified routing: routing fluctuation per\nepoch"
set xlabel "epoch"
set ylabel "top-1 fluctuation (%, mean over layers and seeds)"
set grid
set key outside right top
set xtics 1
plot $s0 using 1:2 with linespoints lw 2 title "Token choice, k=1", $s1 using 1:2 with linespoints lw 2 title "Token choice, k=2", $s2 using 1:2 with linespoints lw 2 title "Expert choice, k=1", $s3 using 1:2 with linespoints lw 2 title "Expert choice, k=2", $s4 using 1:2 with linespoints lw 2 title "USMoE, k=1", $s5 using 1:2 with linespoints lw 2 title "USMoE, k=1.5", $s6 using 1:2 with linespoints lw 2 title "USMoE, k=2"
